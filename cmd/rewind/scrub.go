package main

import (
	"fmt"
	"strings"

	"github.com/rewind-dev/rewind/catalog"
)

// scrub is `rewind verify` without --fsck or --boot: every pack checked
// against its parity or its records' checksums. It fails when a chunk is
// lost.
func scrub(e *env, spec string, repair bool) error {
	api, done, err := e.api()
	if err != nil {
		return err
	}
	defer done()
	bar, progress := newProgress("verify", !e.globals.JSON)
	res, err := api.Verify(e.ctx, catalog.VerifyRequest{Spec: spec, Repair: repair}, progress)
	bar.done()
	if err != nil {
		return err
	}
	if err := e.print(res, func() { printScrub(res, repair) }); err != nil {
		return err
	}
	if !res.OK {
		var vols []string
		for _, a := range res.Affected {
			vols = append(vols, a.Volume)
		}
		if len(vols) == 0 && spec != "" {
			return fmt.Errorf("%d chunks are lost, none of them read by %s: rewind verify without a volume names what they touch", res.LostChunks, spec)
		}
		if len(vols) == 0 {
			return fmt.Errorf("%d chunks are lost (no version reads them)", res.LostChunks)
		}
		return fmt.Errorf("%d chunks are lost, read by %s: import or write the same data again to heal them", res.LostChunks, strings.Join(vols, ", "))
	}
	return nil
}

func printScrub(r *catalog.VerifyResult, repair bool) {
	if r.Store != "" {
		// Packs in an object store carry no parity (its engine keeps its
		// own redundancy).
		fmt.Printf("checked %d packs (%s) in %s, record by record\n", r.Packs, human(r.Bytes), r.Store)
	} else {
		printParityScrub(r)
	}
	printScrubRest(r, repair)
}

func printParityScrub(r *catalog.VerifyResult) {
	fmt.Printf("checked %d packs (%s): %d with parity", r.Packs, human(r.Bytes), r.WithParity)
	if len(r.NoParity) > 0 {
		fmt.Printf(", %d written before parity (checked record by record): %s", len(r.NoParity), strings.Join(r.NoParity, " "))
	}
	if r.Unsealed != "" {
		fmt.Printf(", %s being written (parity once sealed)", r.Unsealed)
	}
	fmt.Println()
}

func printScrubRest(r *catalog.VerifyResult, repair bool) {
	switch {
	case r.Repaired > 0:
		fmt.Printf("repaired: %d damaged units rebuilt from parity and rewritten\n", r.Repaired)
	case r.Repairable > 0 && !repair:
		fmt.Printf("damaged: %d units that parity rebuilds; run rewind verify --repair to rewrite them (reads rebuild them too)\n", r.Repairable)
	}
	if r.ParityRewritten > 0 {
		fmt.Printf("parity: %d missing or damaged sidecars written anew\n", r.ParityRewritten)
	} else if r.ParityMissing > 0 {
		fmt.Printf("parity: %d packs lack their sidecar; rewind verify --repair writes it\n", r.ParityMissing)
	}
	if r.Healed > 0 {
		fmt.Printf("healed: %d chunks lost before were stored again\n", r.Healed)
	}
	if r.OK {
		fmt.Println("ok: nothing lost")
		return
	}
	fmt.Printf("LOST: %d chunks cannot be read\n", r.LostChunks)
	for _, a := range r.Affected {
		if a.Via != "" {
			fmt.Printf("  %s: forked at %s from %s, reads them\n", a.Volume, a.First, a.Via)
			continue
		}
		fmt.Printf("  %s: %d block versions written %s .. %s; instants from %s on may read them\n", a.Volume, a.BlockVersions, a.First, a.Last, a.First)
	}
}
