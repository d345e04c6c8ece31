package main

import (
	"context"
	"errors"
)

var errMountNotBuilt = errors.New("--mount: the FUSE tree is not built into this binary yet")

// startMount mounts the FUSE tree when --mount is given.
func (d *daemon) startMount(ctx context.Context, c *serveCmd) error {
	if c.Mount == "" {
		return nil
	}
	return errMountNotBuilt
}
