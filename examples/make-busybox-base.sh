#!/bin/sh
# Build a busybox-static root filesystem: the Linux test base (about 2 MB).
#   examples/make-busybox-base.sh DIR
# then:  rex base import DIR busybox
set -eu
dest=${1:?usage: make-busybox-base.sh DIR}
bb=${BUSYBOX:-/bin/busybox}
[ -x "$bb" ] || { echo "error: $bb not found; install busybox-static" >&2; exit 1; }
case $(file -b "$bb" 2>/dev/null || echo static) in
  *dynamic*) echo "error: $bb is dynamically linked; install busybox-static" >&2; exit 1 ;;
esac
mkdir -p "$dest"
cd "$dest"
mkdir -p bin sbin usr/bin usr/sbin proc sys dev etc tmp var/www var/run var/log root
chmod 1777 tmp
cp "$bb" bin/busybox
# --install -s puts each applet where busybox expects it (httpd in /usr/sbin, wget in /usr/bin)
chroot . /bin/busybox --install -s
echo 'root:x:0:0:root:/root:/bin/sh' > etc/passwd
echo 'root:x:0:' > etc/group
echo 'hosts: files dns' > etc/nsswitch.conf
echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $("$bb" | head -1)" > etc/rex-base-info
# The base's /etc/rc starts what a .rex ENABLEs, the way FreeBSD's rc.subr(8)
# does: load_rc_config reads /etc/rc.conf.d/NAME after rc.conf, and rc(8) starts
# each enabled /etc/rc.d/NAME. Here: for each /etc/rc.conf.d/NAME whose
# NAME_enable is YES, run /etc/rc.d/NAME start with that file's variables
# (NAME_flags, ...) exported. A jail that copies its own /etc/rc replaces this.
mkdir -p etc/rc.d etc/rc.conf.d
cat > etc/rc <<'RC'
#!/bin/sh
for conf in /etc/rc.conf.d/*; do
    [ -f "$conf" ] || continue
    name=${conf##*/}
    case $name in ''|[0-9]*|*[!A-Za-z0-9_]*) continue ;; esac
    [ -x "/etc/rc.d/$name" ] || continue
    (
        set -a
        . "$conf"
        set +a
        eval "enabled=\${${name}_enable:-NO}"
        case $enabled in [Yy][Ee][Ss]) "/etc/rc.d/$name" start ;; esac
    )
done
exit 0
RC
chmod 755 etc/rc
