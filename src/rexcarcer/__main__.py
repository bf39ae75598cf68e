from rexcarcer.cli.fast import main

main()
