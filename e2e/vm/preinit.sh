#!/bin/busybox sh
# The only code before envd in the test VM (scripts/vm-image puts it at /init
# of the initramfs). It stands in for what a Firecracker guest kernel has built
# in and its kernel command line does: the virtio drivers (Debian builds them as
# modules) and eth0's address (Firecracker's ip=...). Then it mounts the ext4
# root from virtio-blk, unmounts what it used, and switch_roots to envd with the
# bare environment the kernel gives init, so envd is PID 1 and runs every boot
# step itself, exactly as in production.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "pre-init: $*" >/dev/console
  exit 1 # PID 1 exits: the kernel panics and, with panic=1, the VM stops
}

mount -t proc proc /proc || fail "mount /proc"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
mount -t sysfs sysfs /sys || fail "mount /sys"
echo "pre-init: start at uptime $(cut -d' ' -f1 /proc/uptime)"
for m in $(cat /modules.list); do
  insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
i=0
while [ ! -b /dev/vda ] || [ ! -e /sys/class/net/eth0 ]; do
  i=$((i + 1))
  [ "$i" -le 1000 ] || fail "no /dev/vda or eth0 after 10 s"
  sleep 0.01
done
ip link set eth0 up || fail "eth0 up"
ip addr add 169.254.0.21/16 dev eth0 || fail "eth0 address"
ip route add default via 169.254.0.22 dev eth0 || fail "default route"
mount -t ext4 /dev/vda /newroot || fail "mount /dev/vda"

init=/usr/local/bin/envd
for w in $(cat /proc/cmdline); do
  case "$w" in envdvm.init=*) init=${w#envdvm.init=} ;; esac
done
[ -x "/newroot$init" ] || fail "$init missing in the root filesystem"
echo "pre-init: exec $init at uptime $(cut -d' ' -f1 /proc/uptime)"
umount /dev || fail "umount /dev"
umount /sys || fail "umount /sys"
umount /proc || fail "umount /proc"
exec env -i HOME=/ TERM=linux switch_root /newroot "$init"
