package nbd_test

import (
	"context"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

// QEMU's client with queue depth 2 to 4 stalls about 40 ms per request
// against a server that splits replies into several writes (delayed ACK).
// 2000 requests take well under a second without the stall and over a
// minute with it.
func TestNoDelayedAckStall(t *testing.T) {
	qemuImg := tool(t, "qemu-img", "qemu-utils")
	h := newHarness(t)
	h.mem.Fill(pattern(8<<20, 1), 0)
	for _, depth := range []string{"1", "2", "4"} {
		for _, write := range []bool{false, true} {
			args := []string{"bench", "-f", "raw", "-c", "2000", "-d", depth, "-s", "4096", "-S", "4096"}
			if write {
				args = append(args, "-w")
			}
			start := time.Now()
			run(t, 0, nil, qemuImg, append(args, h.uri("single"))...)
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("qemu-img bench -d %s (write=%v): %v", depth, write, d)
			}
		}
	}
}

// The benchmarks below compare this server with nbdkit's memory plugin on
// 1 GiB of data, using the clients users run. Run them with
//
//	go test -run '^$' -bench Clients -benchtime 3x ./nbd/
//
// They need nbdcopy, fio and nbdkit.

const benchSize = 1 << 30

// benchTargets starts both servers with 1 GiB of non-zero data and
// returns their URIs.
func benchTargets(b *testing.B) map[string]string {
	nbdcopy := tool(b, "nbdcopy", "libnbd-bin")
	nbdkit := tool(b, "nbdkit", "nbdkit")
	mem := nbdtest.NewMemory(benchSize, 65536)
	chunk := pattern(64<<20, 7)
	for off := int64(0); off < benchSize; off += int64(len(chunk)) {
		mem.Fill(chunk, off)
	}
	srv := &nbd.Server{Resolver: nbdtest.NewResolver(&nbd.Export{Name: "mem", Backend: mem, MultiConn: true, BlockSize: 4096})}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Shutdown(context.Background()) })

	port := freePort(b)
	kit := exec.Command(nbdkit, "-f", "-p", port, "-i", "127.0.0.1", "memory", "1G")
	if err := kit.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { kit.Process.Kill(); kit.Wait() })
	kitURI := "nbd://127.0.0.1:" + port
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("nbdkit did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	out, err := exec.Command(nbdcopy, "--", "[", nbdkit, "pattern", "1G", "]", kitURI).CombinedOutput()
	if err != nil {
		b.Fatalf("filling nbdkit: %v\n%s", err, out)
	}
	return map[string]string{"rewind": "nbd://" + l.Addr().String() + "/mem", "nbdkit": kitURI}
}

func freePort(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

var fioIOPS = regexp.MustCompile(`IOPS=([0-9.]+)(k?)`)

func BenchmarkClients(b *testing.B) {
	targets := benchTargets(b)
	nbdcopy := tool(b, "nbdcopy", "libnbd-bin")
	fio := tool(b, "fio", "fio")
	qemuImg := tool(b, "qemu-img", "qemu-utils")
	for _, name := range []string{"rewind", "nbdkit"} {
		uri := targets[name]
		b.Run("nbdcopy/"+name, func(b *testing.B) {
			b.SetBytes(benchSize)
			for b.Loop() {
				if out, err := exec.Command(nbdcopy, uri, "null:").CombinedOutput(); err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
			}
		})
		for _, depth := range []string{"2", "32"} {
			b.Run("qemu-img-bench-20000x4k-qd"+depth+"/"+name, func(b *testing.B) {
				for b.Loop() {
					out, err := exec.Command(qemuImg, "bench", "-f", "raw", "-c", "20000", "-d", depth,
						"-s", "4096", "-S", "4096", uri).CombinedOutput()
					if err != nil {
						b.Fatalf("%v\n%s", err, out)
					}
				}
			})
		}
		b.Run("fio-randread-4k-qd32/"+name, func(b *testing.B) {
			for b.Loop() {
				out, err := exec.Command(fio, "--name=r", "--ioengine=nbd", "--uri="+uri, "--rw=randread",
					"--bs=4k", "--iodepth=32", "--runtime=5", "--time_based", "--size=1G").CombinedOutput()
				if err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
				m := fioIOPS.FindSubmatch(out)
				if m == nil {
					b.Fatalf("no IOPS in fio output:\n%s", out)
				}
				iops, _ := strconv.ParseFloat(string(m[1]), 64)
				if string(m[2]) == "k" {
					iops *= 1000
				}
				b.ReportMetric(iops, "iops")
			}
		})
	}
}
