package mount

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func partitionsOf(t *testing.T, path string) []partition {
	t.Helper()
	img, err := openFileImage(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	return findPartitions(img, img.Size())
}

func TestFindPartitionsGPT(t *testing.T) {
	requireTools(t, map[string]string{"sgdisk": "gdisk"})
	disk := filepath.Join(t.TempDir(), "gpt.img")
	sh(t, "truncate", "-s", "64M", disk)
	sh(t, "sgdisk", "-n1:1M:+8M", "-n2:0:+8M", "-n3:0:+16M", "-d2", disk)
	want := []partition{{"p1", 1 << 20, 8 << 20}, {"p3", 17 << 20, 16 << 20}}
	if got := partitionsOf(t, disk); !slices.Equal(got, want) {
		t.Errorf("got %+v, want %+v (numbered by entry, like the kernel)", got, want)
	}
	// A damaged primary header: the backup at the end of the disk serves.
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage!"), 512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got := partitionsOf(t, disk); !slices.Equal(got, want) {
		t.Errorf("from the backup header: got %+v, want %+v", got, want)
	}
}

func TestFindPartitionsMBRWithLogical(t *testing.T) {
	requireTools(t, map[string]string{"parted": "parted"})
	disk := filepath.Join(t.TempDir(), "mbr.img")
	sh(t, "truncate", "-s", "64M", disk)
	sh(t, "parted", "-s", disk, "mklabel", "msdos",
		"mkpart", "primary", "1MiB", "9MiB", "mkpart", "extended", "9MiB", "60MiB",
		"mkpart", "logical", "10MiB", "20MiB", "mkpart", "logical", "21MiB", "30MiB")
	want := []partition{{"p1", 1 << 20, 8 << 20}, {"p5", 10 << 20, 10 << 20}, {"p6", 21 << 20, 9 << 20}}
	if got := partitionsOf(t, disk); !slices.Equal(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestFindPartitionsNone(t *testing.T) {
	requireTools(t, map[string]string{"mkfs.ext4": "e2fsprogs"})
	dir := t.TempDir()
	ext4, vfat, junk := filepath.Join(dir, "ext4.img"), filepath.Join(dir, "vfat.img"), filepath.Join(dir, "junk.img")
	mkExt4(t, ext4, 8, nil)
	// A FAT boot sector ends in 55 AA like an MBR, and its boot code can
	// look like partition entries.
	boot := make([]byte, 1<<20)
	copy(boot, "\xeb\x3c\x90MSDOS5.0")
	copy(boot[54:], "FAT16   ")
	copy(boot[446:], []byte{0, 0, 0, 0, 0x83, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0})
	boot[510], boot[511] = 0x55, 0xAA
	if err := os.WriteFile(vfat, boot, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(junk, randomBytes(2, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for p, typ := range map[string]string{ext4: "ext4", vfat: "vfat", junk: ""} {
		if got := partitionsOf(t, p); got != nil {
			t.Errorf("%s: partitions %+v, want none", filepath.Base(p), got)
		}
		img, _ := openFileImage(p)
		if got, _ := identify(img, 0); got != typ {
			t.Errorf("%s: identified as %q, want %q", filepath.Base(p), got, typ)
		}
		img.Close()
	}
}

func FuzzFindPartitions(f *testing.F) {
	mbr := make([]byte, 4096)
	mbr[510], mbr[511] = 0x55, 0xAA
	copy(mbr[446:], []byte{0x80, 0, 0, 0, 0x83, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0})
	copy(mbr[462:], []byte{0, 0, 0, 0, 0x05, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0})
	f.Add(mbr)
	f.Add(append(make([]byte, 512), []byte(gptSignature)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &fakeImage{data: b}
		for _, p := range findPartitions(r, int64(len(b))) {
			if p.Off <= 0 || p.Size <= 0 || p.Off+p.Size > int64(len(b)) {
				t.Fatalf("partition %+v outside a %d-byte disk", p, len(b))
			}
		}
	})
}
