# A second jail that fetches the page from hello by address:
#   rex exec client -- wget -qO- http://ADDRESS/
BASE busybox
PROVISION RUN mkdir -p /home/client && echo "client ready" > /home/client/README
