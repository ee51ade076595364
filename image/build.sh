#!/bin/bash
# image/build.sh OUT: builds the appliance disk image OUT (build/appliance.img
# from `make image`). The layout, and why, is docs/image.md.
#
# Needs root: mmdebstrap builds the root file system as root (file owners,
# device nodes) and the hooks run in a chroot. Nothing is mounted: the file
# systems are made from directories (mkfs.ext4 -d, mtools) and the GPT disk
# is written with sfdisk into a plain file.
# Tools (Debian packages): mmdebstrap, e2fsprogs, dosfstools, mtools, fdisk,
# systemd-boot-efi (the boot loader, taken from the build machine).
#
# Environment:
#   VERSION            the image version (default: git describe)
#   SOURCE_DATE_EPOCH  every timestamp in the image (default: the commit's time)
#   APPLIANCE_RIG_CACHE  where the Debian root tarball is cached, keyed on the
#                      package list (default /var/cache/appliance-rigs)
#   UPDATE_KEY         the ed25519 private key (PEM, PKCS #8) that signs the
#                      update bundle; its public half goes into the image. The
#                      build's secret: never in the repository. Unset: a key
#                      made for this build directory, OUT's name with
#                      .update-key.pem (a development key).
#
# Writes OUT, OUT's name with .packages (what went in) and with
# -VERSION.bundle (the update bundle: docs/image.md, "Update and rollback").
set -euo pipefail

out=${1:?usage: image/build.sh OUT.img}
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

for tool in mmdebstrap mkfs.ext4 mkfs.vfat mcopy mmd sfdisk resize2fs; do
	command -v "$tool" >/dev/null || {
		echo "image/build.sh: $tool is missing: apt-get install -y --no-install-recommends mmdebstrap e2fsprogs dosfstools mtools fdisk systemd-boot-efi" >&2
		exit 1
	}
done
[ "$(id -u)" = 0 ] || { echo "image/build.sh: run as root (mmdebstrap and chroot); see docs/image.md" >&2; exit 1; }
bootefi=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
[ -r "$bootefi" ] || { echo "image/build.sh: $bootefi is missing: apt-get install -y --no-install-recommends systemd-boot-efi" >&2; exit 1; }

VERSION=${VERSION:-$(git describe --always --dirty 2>/dev/null || echo dev)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export LC_ALL=C TZ=UTC

# The layout (docs/image.md): sizes in MiB, fixed GUIDs so that two builds
# agree and the kernel command line can name the root slot.
disk_guid=6a3c0f52-6d1e-4d0a-9a55-000000000000
esp_guid=6a3c0f52-6d1e-4d0a-9a55-000000000001
roota_guid=6a3c0f52-6d1e-4d0a-9a55-00000000000a
rootb_guid=6a3c0f52-6d1e-4d0a-9a55-00000000000b
data_guid=6a3c0f52-6d1e-4d0a-9a55-00000000000d
roota_fs=6a3c0f52-6d1e-4d0a-9a55-1000000000a0 # ext4 UUIDs of the file systems
data_fs=6a3c0f52-6d1e-4d0a-9a55-1000000000d0
esp_volid=A9914A01
# The boot partition holds both slots' kernels and initrds (about 43 MiB a
# slot) and room for much more: a power cut while an update writes them
# can leave lost clusters that FAT does not give back until checked. Its
# clusters are 4 KiB (-s 8), which FAT32 allows only above about 260 MiB:
# with the 512-byte clusters mkfs.fat makes below that, the firmware read a
# kernel and initrd that Linux wrote in pieces one cluster at a time, for
# minutes under emulation.
esp_mib=512
root_mib=1024
data_mib=256

# dosfstools: fsck.fat, which checks the boot partition at every boot.
packages=systemd,systemd-sysv,udev,kmod,dbus,iproute2,linux-image-amd64,initramfs-tools,dosfstools

work=$(mktemp -d /tmp/appliance-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
start=$(date +%s)

# 1. The binary: static, no build paths, no build ID that varies. And the
# update key: its public half goes into the image.
CGO_ENABLED=0 go build -trimpath -buildvcs=false \
	-ldflags "-s -w -buildid= -X main.version=$VERSION" -o "$work/appliance" ./cmd/appliance
go build -o "$work/mkbundle" ./update/mkbundle
update_key=${UPDATE_KEY:-${out%.img}.update-key.pem}
if [ -z "${UPDATE_KEY:-}" ] && [ ! -e "$update_key" ]; then
	echo "image: UPDATE_KEY unset: a development update key made as $update_key" >&2
	"$work/mkbundle" key "$update_key" "$work/update.pub"
fi
"$work/mkbundle" pub "$update_key" "$work/update.pub"

# 2. Debian bookworm, minbase, no documentation, cached on the package list
# (and the exclusions) so that CI builds it once.
cache=${APPLIANCE_RIG_CACHE:-/var/cache/appliance-rigs}
mkdir -p "$cache"
dpkgopts=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
	--dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*')
# The Debian root's own clock is fixed, not the commit's: the cache then
# serves every commit, and what mmdebstrap writes from the clock (shadow's
# last-change day, the initrd's cpio) does not change with the commit. The
# commit's time is applied to every file afterwards.
debian_epoch=1795132800 # 2026-11-19 00:00 UTC
key=$(printf '%s|%s|%s' "$packages" "${dpkgopts[*]}" "$debian_epoch" | sha256sum | cut -c1-12)
tarball=$cache/image-bookworm-$key.tar
exec 9>"$tarball.lock" # one mmdebstrap per tarball, however many builds and tests run
flock 9
if [ ! -e "$tarball" ]; then
	echo "image: mmdebstrap (cached as $tarball)" >&2
	SOURCE_DATE_EPOCH=$debian_epoch mmdebstrap --variant=minbase --format=tar --include="$packages" "${dpkgopts[@]}" \
		bookworm "$tarball.tmp" >&2
	mv "$tarball.tmp" "$tarball"
fi
flock -u 9
tar -xf "$tarball" -C "$root"
# Kernel modules a media unit has no use for: display drivers (the console
# is the serial port and the EFI frame buffer built into the kernel), sound,
# cameras and tuners, radios (Wi-Fi, Bluetooth, WWAN, 802.15.4), industrial
# I/O and staging drivers. About 160 MiB less root to write, hash and carry
# in every update bundle. The initrd keeps what it was made with.
kver=$(basename "$(echo "$root"/usr/lib/modules/*)")
for d in drivers/gpu drivers/media sound drivers/net/wireless net/wireless net/mac80211 \
	net/bluetooth drivers/bluetooth drivers/net/wwan net/ieee802154 drivers/net/ieee802154 \
	drivers/staging drivers/iio drivers/comedi drivers/isdn; do
	rm -rf "$root/usr/lib/modules/$kver/kernel/$d"
done
chroot "$root" depmod "$kver"

# 3. The appliance, its unit enabled, its user, its udev rule, its config.
install -m 0755 "$work/appliance" "$root/usr/bin/appliance"
install -D -m 0644 image/appliance.service "$root/etc/systemd/system/appliance.service"
install -D -m 0644 image/appliance.sysusers "$root/usr/lib/sysusers.d/appliance.conf"
install -D -m 0644 image/60-appliance-watchdog.rules "$root/usr/lib/udev/rules.d/60-appliance-watchdog.rules"
install -D -m 0644 image/rootfs/61-appliance-slots.rules "$root/usr/lib/udev/rules.d/61-appliance-slots.rules"
install -D -m 0644 "$work/update.pub" "$root/usr/share/appliance/update.pub"
install -D -m 0644 image/rootfs/appliance-update.conf "$root/etc/systemd/system/appliance.service.d/update.conf"
for u in appliance-trial.service appliance-reboot.path appliance-reboot.service; do
	install -D -m 0644 "image/rootfs/$u" "$root/etc/systemd/system/$u"
done
install -D -m 0644 image/appliance.yaml "$root/etc/appliance/appliance.yaml"
install -D -m 0644 image/rootfs/appliance-firstboot.service "$root/etc/systemd/system/appliance-firstboot.service"
install -D -m 0644 image/rootfs/journald.conf "$root/etc/systemd/journald.conf.d/appliance.conf"
install -D -m 0644 image/rootfs/system.conf "$root/etc/systemd/system.conf.d/appliance.conf"
install -D -m 0644 image/rootfs/10-dhcp.network "$root/etc/systemd/network/10-dhcp.network"
install -D -m 0644 README.md "$root/usr/share/doc/appliance/README.md"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/appliance.service "$root/etc/systemd/system/multi-user.target.wants/appliance.service"
ln -sf /etc/systemd/system/appliance-firstboot.service "$root/etc/systemd/system/multi-user.target.wants/appliance-firstboot.service"
ln -sf /etc/systemd/system/appliance-trial.service "$root/etc/systemd/system/multi-user.target.wants/appliance-trial.service"
ln -sf /etc/systemd/system/appliance-reboot.path "$root/etc/systemd/system/multi-user.target.wants/appliance-reboot.path"
ln -sf /lib/systemd/system/systemd-networkd.service "$root/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
# Nothing an appliance does not need: the unit is updated slot by slot,
# never by apt, and its root is read-only.
rm -f "$root"/etc/systemd/system/timers.target.wants/{apt-daily.timer,apt-daily-upgrade.timer,dpkg-db-backup.timer,e2scrub_all.timer}
printf 'appliance\n' >"$root/etc/hostname"
printf '%s\n' "$VERSION" >"$root/etc/appliance/image-version"
# The root is read-only at run time: users are made now, machine-id is
# made at boot (empty file: systemd mounts a transient one over it).
chroot "$root" systemd-sysusers >&2
gid=$(awk -F: '$1 == "appliance" { print $3 }' "$root/etc/group")
: >"$root/etc/machine-id"
cat >"$root/etc/fstab" <<EOF
# The root slot is chosen by the boot loader (root=PARTUUID=... ro).
tmpfs /var tmpfs mode=0755,nodev,nosuid,size=64M 0 0
tmpfs /tmp tmpfs mode=1777,nodev,nosuid,size=64M 0 0
PARTUUID=$data_guid /var/lib/appliance ext4 nodev,nosuid,noexec,x-systemd.growfs 0 2
# The boot partition: writable by group appliance only (an update writes a
# slot's kernel, initrd and boot entry), by nobody else. nofail: a unit
# whose boot partition Linux cannot mount still runs (it cannot update).
# Checked at every boot (pass 2, fsck.fat -a): a power cut while an update
# wrote a kernel or initrd leaves clusters that FAT gives back only when
# checked, and the next update needs the room.
PARTUUID=$esp_guid /boot vfat nodev,nosuid,noexec,nofail,uid=0,gid=$gid,fmask=0117,dmask=0007 0 2
EOF
mkdir -p "$root/var/lib/appliance"

# 4. The boot partition: systemd-boot, and slot A's kernel and initrd.
esp=$work/esp
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/systemd" "$esp/loader/entries" "$esp/a"
cp "$bootefi" "$esp/EFI/BOOT/BOOTX64.EFI"
cp "$bootefi" "$esp/EFI/systemd/systemd-bootx64.efi"
cp "$(readlink -f "$root"/boot/vmlinuz-*)" "$esp/a/vmlinuz"
cp "$(readlink -f "$root"/boot/initrd.img-*)" "$esp/a/initrd.img"
# No fixed default: systemd-boot boots the first good entry in its order,
# the highest generation (version GENERATION-VERSION), and sorts an entry
# whose trial boots are spent last; that is how an update falls back.
cat >"$esp/loader/loader.conf" <<EOF
timeout 0
default appliance-*
editor no
EOF
cat >"$esp/loader/entries/appliance-a.conf" <<EOF
title appliance $VERSION (slot A)
sort-key appliance
version 1-$VERSION
linux /a/vmlinuz
initrd /a/initrd.img
options root=PARTUUID=$roota_guid ro console=tty0 console=ttyS0 panic=10 appliance.slot=a
EOF
# The kernel and initrd live on the boot partition; the root keeps the modules.
rm -f "$root"/boot/vmlinuz-* "$root"/boot/initrd.img-* "$root"/vmlinuz* "$root"/initrd.img*

# 5. File systems, every timestamp SOURCE_DATE_EPOCH.
find "$root" "$esp" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
mkfs.ext4 -q -F -L root-a -U "$roota_fs" -E "hash_seed=$roota_fs,lazy_itable_init=0" \
	-d "$root" "$work/root-a.ext4" "${root_mib}M"
# mke2fs -d copies each file's ctime, which no tool can set: set them all
# to SOURCE_DATE_EPOCH with debugfs, by path, in one batch.
stamp=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S)
(cd "$root" && find . -mindepth 1 | sort | sed 's|^\.||; s|"|\\"|g' | while IFS= read -r p; do
	printf 'sif "%s" ctime %s\n' "$p" "$stamp"
done; printf 'sif / ctime %s\n' "$stamp") >"$work/ctime.debugfs"
debugfs -w -f "$work/ctime.debugfs" "$work/root-a.ext4" >/dev/null 2>"$work/ctime.err"
if grep -v '^debugfs ' "$work/ctime.err" | grep -q .; then
	echo "image/build.sh: debugfs could not set every ctime:" >&2; head "$work/ctime.err" >&2; exit 1
fi
mkdir "$work/data-empty"
touch -d "@$SOURCE_DATE_EPOCH" "$work/data-empty"
mkfs.ext4 -q -F -L appliance-data -U "$data_fs" -E "hash_seed=$data_fs,lazy_itable_init=0" \
	-d "$work/data-empty" "$work/data.ext4" "${data_mib}M"
mkfs.vfat -F 32 -s 8 --invariant -i "$esp_volid" -n ESP -C "$work/esp.vfat" $((esp_mib * 1024)) >/dev/null
(cd "$esp" && find . -mindepth 1 -type d | sort | sed 's|^\./||' | while read -r d; do mmd -i "$work/esp.vfat" "::$d"; done)
(cd "$esp" && find . -type f | sort | sed 's|^\./||' | while read -r f; do mcopy -m -i "$work/esp.vfat" "$f" "::$f"; done)

# 6. The disk: GPT, 1 MiB aligned, slot B empty until the first update.
mib=2048 # sectors
esp_start=$mib
roota_start=$((esp_start + esp_mib * mib))
rootb_start=$((roota_start + root_mib * mib))
data_start=$((rootb_start + root_mib * mib))
total_mib=$((1 + esp_mib + 2 * root_mib + data_mib + 1))
rm -f "$out.tmp"
truncate -s "${total_mib}M" "$out.tmp"
sfdisk -q --no-reread --no-tell-kernel "$out.tmp" <<EOF
label: gpt
label-id: $disk_guid
unit: sectors
first-lba: 2048
start=$esp_start, size=$((esp_mib * mib)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$esp_guid, name="esp"
start=$roota_start, size=$((root_mib * mib)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$roota_guid, name="root-a"
start=$rootb_start, size=$((root_mib * mib)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$rootb_guid, name="root-b"
start=$data_start, size=$((data_mib * mib)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$data_guid, name="appliance-data"
EOF
dd if="$work/esp.vfat" of="$out.tmp" bs=1M seek=$((esp_start / mib)) conv=notrunc,sparse status=none
dd if="$work/root-a.ext4" of="$out.tmp" bs=1M seek=$((roota_start / mib)) conv=notrunc,sparse status=none
dd if="$work/data.ext4" of="$out.tmp" bs=1M seek=$((data_start / mib)) conv=notrunc,sparse status=none
mv "$out.tmp" "$out"

# What went in, for the record.
chroot "$root" dpkg-query -W -f '${Package} ${Version} ${Architecture}\n' | sort >"${out%.img}.packages"

# 7. The update bundle: slot A's root file system made again at the size
# its files need (an update writes only that much, not the whole slot),
# its kernel and initrd, signed.
rootfs_mib=$(( $(du -sm "$root" | cut -f1) * 105 / 100 + 48 ))
mkfs.ext4 -q -F -L root -U "$roota_fs" -E "hash_seed=$roota_fs,lazy_itable_init=0" \
	-d "$root" "$work/rootfs.ext4" "${rootfs_mib}M"
debugfs -w -f "$work/ctime.debugfs" "$work/rootfs.ext4" >/dev/null 2>"$work/ctime.err"
"$work/mkbundle" bundle "$update_key" "$VERSION" "$work/rootfs.ext4" "$esp/a/vmlinuz" "$esp/a/initrd.img" "${out%.img}-$VERSION.bundle"
echo "image: update bundle ${out%.img}-$VERSION.bundle ($(du -m --apparent-size "${out%.img}-$VERSION.bundle" | cut -f1) MiB)" >&2
echo "image: $out ($total_mib MiB, $(du -m "$out" | cut -f1) MiB used), version $VERSION, SOURCE_DATE_EPOCH $SOURCE_DATE_EPOCH, $(($(date +%s) - start)) s" >&2
