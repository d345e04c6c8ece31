package nbd

import (
	"math/bits"
	"net"
	"sync"
	"time"

	"github.com/rewind-dev/rewind/blockstore/hugemem"
)

// Buffer size classes: payload capacities 2^12 .. 2^25, each with
// replyHeadroom in front.
const (
	minClassShift = 12
	numClasses    = 25 - minClassShift + 1
	// maxKeptScratch bounds the scratch buffer a pooled job keeps.
	maxKeptScratch = 64 << 10
)

// pools recycles request buffers and jobs so that steady-state serving
// allocates nothing per request. The zero value is ready.
type pools struct {
	jobs sync.Pool // *job
}

// bufPools hold the request buffers of every server of the process, one
// pool per class, in memory advised for huge pages: the buffers of a
// client's first requests are fresh memory, faulted in 4 KiB at a time
// from the Go heap, which is dear on a virtual machine (see hugemem).
var bufPools = func() (p [numClasses]*hugemem.Pool) {
	for i := range p {
		p[i] = hugemem.NewPool(classCap(i), keptBufferBytes)
	}
	return p
}()

// keptBufferBytes is how much memory a class keeps once its buffers are
// given back: a busy connection's budget (nbdcopy keeps 32 MiB of 256 KiB
// reads in flight). Buffers beyond it give their memory back.
const keptBufferBytes = connBudget

func bufClass(n int) int {
	payload := n - replyHeadroom
	if payload <= 1<<minClassShift {
		return 0
	}
	return bits.Len(uint(payload-1)) - minClassShift
}

func classCap(i int) int { return 1<<(i+minClassShift) + replyHeadroom }

// getBuf returns a buffer of length n (n <= MaxPayload+replyHeadroom).
func (p *pools) getBuf(n int) *[]byte {
	b := bufPools[bufClass(n)].Get()
	*b = (*b)[:n]
	return b
}

func (p *pools) putBuf(b *[]byte) {
	if i := bufClass(cap(*b)); i < numClasses {
		bufPools[i].Put(b)
	}
}

// job is one request on its way from the reader through a worker to the
// writer.
type job struct {
	req     request
	start   time.Time
	err     *replyError // set when the request failed
	buf     *[]byte     // WRITE payload, or READ data after replyHeadroom
	budget  int64       // bytes held in the connection's budget
	scratch []byte      // small reply parts: headers, hole chunks, extents
	runs    []run       // READ layout, reused
	segs    net.Buffers // the reply, written in one go
}

// run is a stretch of a read: data, or a hole sent as OFFSET_HOLE.
type run struct {
	length int64
	hole   bool
}

func (p *pools) getJob() *job {
	if v := p.jobs.Get(); v != nil {
		return v.(*job)
	}
	return &job{}
}

func (p *pools) putJob(j *job) {
	if j.buf != nil {
		p.putBuf(j.buf)
	}
	scratch := j.scratch[:0]
	if cap(scratch) > maxKeptScratch {
		scratch = nil
	}
	clear(j.segs[:cap(j.segs)])
	*j = job{scratch: scratch, runs: j.runs[:0], segs: j.segs[:0]}
	p.jobs.Put(j)
}

// replyLen is the number of bytes of a job's reply.
func (j *job) replyLen() int {
	n := 0
	for _, s := range j.segs {
		n += len(s)
	}
	return n
}
