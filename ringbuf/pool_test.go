package ringbuf

import (
	"sync"
	"testing"
)

func TestPoolGet(t *testing.T) {
	t.Parallel()
	p := NewPool(1500)
	b := p.Get()
	if len(b) != 1500 || cap(b) != 1500 || p.BufSize() != 1500 {
		t.Fatalf("Get: len %d cap %d", len(b), cap(b))
	}
	b[0] = 7
	if !p.Put(b[:10]) {
		t.Fatal("Put refused a re-sliced buffer of the pool's capacity")
	}
	// sync.Pool may or may not hand the same buffer back; either way it is
	// full length.
	if b := p.Get(); len(b) != 1500 || cap(b) != 1500 {
		t.Fatalf("Get after Put: len %d cap %d", len(b), cap(b))
	}
}

func TestPoolPutRefusesForeignBuffers(t *testing.T) {
	t.Parallel()
	p := NewPool(1500)
	b := p.Get()
	for name, foreign := range map[string][]byte{
		"nil":        nil,
		"smaller":    make([]byte, 1499),
		"larger":     make([]byte, 1501),
		"larger cap": make([]byte, 1500, 2000),
		"offset":     b[64:],
	} {
		if p.Put(foreign) {
			t.Errorf("Put accepted %s buffer (len %d cap %d)", name, len(foreign), cap(foreign))
		}
	}
}

func TestNewPoolPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("NewPool(0) did not panic")
		}
	}()
	NewPool(0)
}

func TestPoolConcurrent(t *testing.T) {
	t.Parallel()
	p := NewPool(256)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				b := p.Get()
				if len(b) != 256 {
					t.Errorf("Get returned %d bytes", len(b))
					return
				}
				b[0], b[255] = byte(g), byte(i)
				if b[0] != byte(g) || b[255] != byte(i) {
					t.Error("buffer shared between goroutines")
					return
				}
				p.Put(b)
			}
		})
	}
	wg.Wait()
}

func TestPoolSteadyStateAllocs(t *testing.T) {
	p := NewPool(2048)
	p.Put(p.Get()) // warm up: one buffer and one box
	if n := testing.AllocsPerRun(1000, func() {
		b := p.Get()
		if !p.Put(b) {
			t.Fatal("Put refused")
		}
	}); n != 0 {
		t.Errorf("Get+Put allocate %v times", n)
	}
}

func BenchmarkPoolGetPut(b *testing.B) {
	p := NewPool(2048)
	b.ReportAllocs()
	b.SetBytes(2048)
	for b.Loop() {
		p.Put(p.Get())
	}
}

func BenchmarkPoolGetPutParallel(b *testing.B) {
	p := NewPool(2048)
	b.ReportAllocs()
	b.SetBytes(2048)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Put(p.Get())
		}
	})
}
