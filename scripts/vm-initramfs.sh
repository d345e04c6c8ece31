#!/usr/bin/env bash
# The VM fixture of the integration tests: a tiny Linux guest that boots
# from a disk, proves it ran, writes to its disk and powers off.
#
#   scripts/vm-initramfs.sh OUTDIR [CONTENT]
#
# makes, in OUTDIR (cached: rebuilt only when this script, the kernel or
# CONTENT change):
#
#   vmlinuz     the installed Debian kernel (the newest /boot/vmlinuz-*,
#               or KVER=... to choose)
#   initrd.gz   busybox and the modules virtio_pci virtio_blk
#               crc32c_generic ext4 (with their dependencies, in order); its
#               /init mounts /dev/vda on /newroot and switch_roots to it
#   root.img    a 64 MiB ext4 root disk: static busybox and an /init that
#               on its first boot writes CONTENT (one line, default
#               "written by the rewind test guest") into /written-by-guest
#               and on each later boot N appends "boot N"; then prints
#               "REWIND-VM-BOOTED boot=N" on the console, syncs, remounts /
#               read-only and powers off (poweroff -f)
#
# Boot it (copy root.img first: booting writes to it). Under TCG on a
# 2-core Debian 12 host this took 7.5-9 s from the raw file and 7 s from a
# qemu-nbd export:
#
#   timeout 120 qemu-system-x86_64 -accel tcg -nographic -no-reboot \
#       -m 256 -smp 1 -net none \
#       -kernel OUTDIR/vmlinuz -initrd OUTDIR/initrd.gz \
#       -append "console=ttyS0 root=/dev/vda rw init=/init panic=-1 quiet" \
#       -drive file=root.img,format=raw,if=virtio </dev/null
#
# and from an NBD export, replace the -drive with
#   -drive file=nbd://127.0.0.1:PORT/EXPORT,format=raw,if=virtio
#
# The console shows REWIND-VM-BOOTED boot=1; afterwards
# `debugfs -R 'cat /written-by-guest' root.img` prints CONTENT.
# Needs: qemu-system-x86 linux-image-amd64 busybox-static cpio kmod
# e2fsprogs (make deps).
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

die() {
	echo "vm-initramfs: $*" >&2
	exit 1
}

(($# == 1 || $# == 2)) || die "usage: $0 OUTDIR [CONTENT]"
out=$1
content=${2:-written by the rewind test guest}
[[ $content != *$'\n'* ]] || die "CONTENT must be one line"

kver=${KVER:-}
if [[ -z $kver ]]; then
	kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
	[[ -n $kernel ]] || die "no /boot/vmlinuz-*: install linux-image-amd64 (make deps)"
	kver=${kernel#/boot/vmlinuz-}
fi
kernel=/boot/vmlinuz-$kver
[[ -r $kernel ]] || die "$kernel is missing or unreadable"
[[ -d /lib/modules/$kver ]] || die "/lib/modules/$kver is missing: install linux-image-amd64"
busybox=/bin/busybox
ldd "$busybox" >/dev/null 2>&1 && die "$busybox is not static: install busybox-static"

mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

key=$( (cat "$0" && echo "$kver" && echo "$content" && sha256sum "$kernel" "$busybox") | sha256sum | cut -d' ' -f1)
if [[ -f $out/.key && $(cat "$out/.key") == "$key" && -f $out/root.img && -f $out/initrd.gz && -f $out/vmlinuz ]]; then
	exit 0
fi
rm -f "$out/.key"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the initramfs -------------------------------------------------------
ird=$work/initramfs
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,modules}
cp "$busybox" "$ird/bin/busybox"
ln -s busybox "$ird/bin/sh"
# modprobe --show-depends takes one module (further words are parameters).
for m in virtio_pci virtio_blk crc32c_generic ext4; do
	modprobe -S "$kver" --show-depends "$m" || die "kernel $kver has no module $m"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' >"$work/modules"
n=0
while read -r ko; do
	n=$((n + 1))
	name=$(printf '%02d-%s' "$n" "$(basename "$ko")")
	case $ko in
	*.ko.xz) xz -dc "$ko" >"$ird/modules/${name%.xz}" ;;
	*.ko.zst) zstd -qdc "$ko" >"$ird/modules/${name%.zst}" ;;
	*.ko.gz) gzip -dc "$ko" >"$ird/modules/${name%.gz}" ;;
	*) cp "$ko" "$ird/modules/$name" ;;
	esac
done <"$work/modules"
cat >"$ird/init" <<'INIT'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# In dependency order; crc32c-intel fails without SSE4.2 and is not needed.
for m in /modules/*.ko; do insmod "$m" 2>/dev/null; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
fail() { echo "REWIND-VM-FAILED: $*" >/dev/console; poweroff -f; }
[ -b /dev/vda ] || fail "no /dev/vda after 10 s"
mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount /dev/vda"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /init
INIT
chmod 755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

# --- the root disk -------------------------------------------------------
rd=$work/root
mkdir -p "$rd"/{bin,dev,proc,sys,tmp,etc}
cp "$busybox" "$rd/bin/busybox"
for applet in $("$busybox" --list); do
	[[ $applet == busybox ]] || ln -s busybox "$rd/bin/$applet"
done
printf '%s\n' "$content" >"$rd/etc/guest-content"
cat >"$rd/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
f=/written-by-guest
if [ -e $f ]; then
	n=$(($(wc -l <$f) + 1))
	echo "boot $n" >>$f
else
	cat /etc/guest-content >$f
	n=1
fi
sync
echo "REWIND-VM-BOOTED boot=$n" >/dev/console
mount -o remount,ro /
sync
poweroff -f
INIT
chmod 755 "$rd/init"
truncate -s 64M "$work/root.img"
mkfs.ext4 -F -q -L vmroot -E root_owner=0:0 -d "$rd" "$work/root.img"

cp "$kernel" "$work/vmlinuz"
mv "$work/vmlinuz" "$work/initrd.gz" "$work/root.img" "$out/"
echo "$key" >"$out/.key"
