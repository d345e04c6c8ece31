// Package proof judges whether a recovery point is usable, beyond its
// bytes being intact: Fsck checks each filesystem inside it, Boot starts
// it in a virtual machine and waits for a console line. rewind verify
// --fsck and --boot use them; the chunk scrub lives elsewhere.
//
// # Fsck
//
// Fsck hands the image to mount.Replay, which serves it as a throwaway
// copy-on-write overlay and replays each filesystem's journal there, as
// rewind mount --files does, so a crash-consistent instant is judged as
// the system would have seen it after a crash. Each ext2/3/4 filesystem
// is then checked with `e2fsck -fn`, each xfs with `xfs_repair -n`, on
// its loop device over the overlay (read-only checks: nothing is
// repaired, and the overlay is thrown away). Any other type (btrfs,
// vfat, swap, unknown) is reported as "not checked", never as a pass.
// The whole report passes when at least one filesystem was checked and
// none failed. It needs what MountFiles needs: root (loop devices,
// mounts), /dev/fuse and a state directory; the daemon runs it.
//
// # Boot
//
// Boot runs qemu-system-x86_64 on a disk given as a qemu drive file (the
// daemon's read-only NBD export of the pinned instant), with snapshot=on:
// qemu's writes go to a temporary qcow2 overlay in a private directory
// that Boot removes, so history never changes. The VM has no network
// (-nic none), its serial console is captured, and --kernel, --initrd
// and --append are passed through for images without a boot loader. KVM
// is used when /dev/kvm opens, else TCG; a VM that qemu stops under KVM
// before its first console line is started again under TCG (some hosts'
// nested KVM opens but refuses the host CPU's registers), and one that
// says nothing under KVM for 20 s gets the same VM under TCG beside it,
// the first to pass winning (another nested KVM spins a kernel silently).
// Boot passes as soon as a
// console line matches Expect, and fails when the timeout passes, or
// qemu exits, first; the VM is killed in every case (and dies with the
// calling process, by PR_SET_PDEATHSIG). The result carries the last
// console lines.
//
// # Concurrency
//
// Fsck and Boot are plain blocking calls; each owns what it starts and
// may run concurrently with other calls. ctx cancels them: the checker or
// the VM is killed and everything made is removed before they return.
package proof
