from rexcarcer.cli.main import main

main()
