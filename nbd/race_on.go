//go:build race

package nbd

import (
	"runtime"
	"unsafe"
)

// The raw system calls of rawio.go bypass the annotations syscall.Read
// and syscall.Write give the race detector; these put them back: the
// kernel wrote the bytes a read returned and read the bytes a writev
// took. The detector ignores memory outside the Go heap (hugemem buffers).

// raceEnabled is whether this is a race build.
const raceEnabled = true

func raceWritten(p []byte) {
	if len(p) > 0 {
		runtime.RaceWriteRange(unsafe.Pointer(&p[0]), len(p))
	}
}

func raceRead(p []byte) {
	if len(p) > 0 {
		runtime.RaceReadRange(unsafe.Pointer(&p[0]), len(p))
	}
}
