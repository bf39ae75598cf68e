# A second jail that fetches the page from hello by name (rex's DNS, when the
# jailer services run: rex host serve or rex host setup):
#   rex exec client -- wget -qO- http://hello.jail.rex.internal/
#   rex exec client -- wget -qO- http://web.svc.rex.internal/
BASE busybox
PROVISION RUN mkdir -p /home/client && echo "client ready" > /home/client/README
