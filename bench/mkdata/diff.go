package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// runDiff prints how many blocks of two images of one size differ, as
// "CHANGED of TOTAL blocks of N bytes differ (P%; Q% of the D that hold
// data)", D counting the blocks that are not all zeroes in either image.
func runDiff(args []string) error {
	fset := flag.NewFlagSet("diff", flag.ContinueOnError)
	block := fset.Int("block", 64<<10, "block size in bytes")
	pos, err := parse(fset, args, 2)
	if err != nil {
		return err
	}
	if *block <= 0 {
		return fmt.Errorf("-block %d: want a positive size", *block)
	}
	a, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer a.Close()
	b, err := os.Open(pos[1])
	if err != nil {
		return err
	}
	defer b.Close()
	bufA, bufB := make([]byte, *block), make([]byte, *block)
	var total, changed, data int64
	for {
		na, errA := io.ReadFull(a, bufA)
		nb, errB := io.ReadFull(b, bufB)
		if na != nb {
			return fmt.Errorf("%s and %s differ in size", pos[0], pos[1])
		}
		if na == 0 {
			break
		}
		total++
		if !bytes.Equal(bufA[:na], bufB[:nb]) {
			changed++
		}
		if !allZero(bufA[:na]) || !allZero(bufB[:nb]) {
			data++
		}
		if err := eofOrNil(errA, errB); err != nil {
			return err
		}
	}
	fmt.Printf("%d of %d blocks of %d bytes differ (%.2f%%; %.2f%% of the %d that hold data)\n", changed, total, *block,
		100*float64(changed)/float64(max(total, 1)), 100*float64(changed)/float64(max(data, 1)), data)
	return nil
}

func eofOrNil(errs ...error) error {
	for _, err := range errs {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
