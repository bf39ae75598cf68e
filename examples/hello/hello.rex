# A web server jail: copies a page and starts busybox httpd from /etc/rc,
# the way FreeBSD's exec.start runs /etc/rc.
BASE busybox
PROVISION COPY index.html /var/www/index.html
PROVISION COPY rc /etc/rc
ENV GREETING=hello
SERVICE web PORT 80
