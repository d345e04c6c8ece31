package mount

import (
	"bytes"
	"encoding/binary"
	"io"
)

// identify names what starts at off: a filesystem type the kernel mounts
// (typ), or a note on something that holds no files (swap, LUKS, LVM).
// Both are empty when nothing is recognised.
func identify(r io.ReaderAt, off int64) (typ, note string) {
	at := func(o int64, sig string) bool {
		b := readAt(r, len(sig), off+o)
		return b != nil && string(b) == sig
	}
	if b := readAt(r, 2, off+1080); b != nil && binary.LittleEndian.Uint16(b) == 0xEF53 {
		return "ext4", "" // the ext4 driver mounts ext2 and ext3 too
	}
	switch {
	case at(0, "XFSB"):
		return "xfs", ""
	case at(65600, "_BHRfS_M"):
		return "btrfs", ""
	case at(3, "NTFS    "):
		return "ntfs3", ""
	case at(32769, "CD001"):
		return "iso9660", ""
	case at(0, "LUKS\xba\xbe"):
		return "", "encrypted (LUKS): open it with cryptsetup and mount the mapped device"
	case at(512, "LABELONE"):
		return "", "an LVM physical volume: activate its volume group and mount the logical volumes"
	case at(4086, "SWAPSPACE2"), at(4086, "SWAP-SPACE"):
		return "", "swap space holds no files"
	}
	if boot := readAt(r, 512, off); boot != nil && boot[510] == 0x55 && boot[511] == 0xAA &&
		(bytes.HasPrefix(boot[54:], []byte("FAT1")) || bytes.HasPrefix(boot[82:], []byte("FAT32"))) {
		return "vfat", ""
	}
	return "", ""
}

// mountData is the filesystem-specific mount data for a read-only view.
func mountData(typ string) string {
	if typ == "xfs" {
		// A copy of a filesystem that is mounted elsewhere has the same
		// UUID, which xfs refuses unless told.
		return "nouuid"
	}
	return ""
}
