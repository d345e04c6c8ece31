package weed

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Cluster is a SeaweedFS cluster: a master with replication 001 (two
// copies on different servers of one rack), three volume servers and a
// filer with the S3 gateway.
type Cluster struct {
	*Server
	volumes []*proc
}

// StartCluster runs a cluster for the test and waits until it takes a
// PUT; the test's cleanup kills it and removes its directory.
func StartCluster(t testing.TB, o Options) *Cluster {
	t.Helper()
	c := &Cluster{}
	s, err := startWith(func(s *Server, bin string, ports []int) error {
		c.volumes = nil
		master, filer, s3 := ports[0], ports[1], ports[2]
		ms := "127.0.0.1:" + strconv.Itoa(master)
		s.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", s3)
		if _, err := s.run(bin, "master", []string{
			"-ip=127.0.0.1", "-ip.bind=127.0.0.1", port("-port", master),
			"-mdir=" + mkdir(s, "m"), "-defaultReplication=001",
			"-volumeSizeLimitMB=" + strconv.Itoa(volumeLimit(o)), "-telemetry=false",
		}, "WEED_MASTER_VOLUME_GROWTH_COPY_2=1"); err != nil {
			return err
		}
		for i, vp := range ports[3:] {
			name := "volume-" + strconv.Itoa(i)
			p, err := s.run(bin, name, []string{
				"-ip=127.0.0.1", "-ip.bind=127.0.0.1", port("-port", vp),
				"-dir=" + mkdir(s, name), "-max=0", "-master=" + ms,
				"-dataCenter=dc1", "-rack=rack1", "-preStopSeconds=0",
			})
			if err != nil {
				return err
			}
			c.volumes = append(c.volumes, p)
		}
		_, err := s.run(bin, "filer", []string{
			"-ip=127.0.0.1", "-ip.bind=127.0.0.1", port("-port", filer), "-master=" + ms,
			"-defaultStoreDir=" + mkdir(s, "filer"),
			"-localSocket=" + filepath.Join(s.dir, "f.sock"),
			"-s3", port("-s3.port", s3), "-s3.config=" + filepath.Join(s.dir, "s3.json"),
			"-s3.port.iceberg=0", "-s3.port.lance=0",
			"-s3.localSocket=" + filepath.Join(s.dir, "s3.sock"),
		})
		return err
	}, 6)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	c.Server = s
	return c
}

// mkdir makes and names a process's directory under the server's.
func mkdir(s *Server, name string) string {
	d := filepath.Join(s.dir, name)
	_ = os.Mkdir(d, 0o750)
	return d
}

// Volumes is the number of volume servers.
func (c *Cluster) Volumes() int { return len(c.volumes) }

// VolumeBytes is the size of volume server i's data files (*.dat): a
// test kills one that holds data.
func (c *Cluster) VolumeBytes(i int) int64 {
	var n int64
	filepath.WalkDir(filepath.Join(c.dir, c.volumes[i].name), func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasSuffix(p, ".dat") {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// KillVolume SIGKILLs volume server i (0, 1 or 2) and waits until it is
// gone. The others and the filer keep running.
func (c *Cluster) KillVolume(i int) {
	c.volumes[i].kill()
}
