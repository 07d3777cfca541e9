package udp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/tunnel/underlay"
)

var loopback = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 0)

// listen opens a Conn on 127.0.0.1 and closes it when the test ends.
func listen(t testing.TB, opts Options) *stdConn {
	t.Helper()
	c, err := Listen(loopback, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*stdConn)
}

// datagrams returns count datagrams, datagram i size(i) bytes long and
// filled from byte i on, all to dst.
func datagrams(count int, size func(i int) int, dst netip.AddrPort) ([][]byte, []netip.AddrPort) {
	bufs := make([][]byte, count)
	dsts := make([]netip.AddrPort, count)
	for i := range bufs {
		bufs[i] = make([]byte, size(i))
		for j := range bufs[i] {
			bufs[i][j] = byte(i + j)
		}
		dsts[i] = dst
	}
	return bufs, dsts
}

// batch is a set of receive buffers.
type batch struct {
	bufs  [][]byte
	sizes []int
	srcs  []netip.AddrPort
}

func newBatch(n, size int) *batch {
	b := &batch{bufs: make([][]byte, n), sizes: make([]int, n), srcs: make([]netip.AddrPort, n)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, size)
	}
	return b
}

// receive reads from c until it has want datagrams, and checks them against
// sent, in order, and their source against from.
func receive(t *testing.T, c underlay.Conn, b *batch, sent [][]byte, from netip.AddrPort) {
	t.Helper()
	// A lost datagram must fail the test, not hang it: closing the socket
	// ends the pending ReadBatch. The bound is generous, not a timing check.
	watchdog := time.AfterFunc(time.Minute, func() { c.Close() })
	defer watchdog.Stop()
	got := 0
	for got < len(sent) {
		n, err := c.ReadBatch(b.bufs, b.sizes, b.srcs)
		if err != nil {
			t.Fatalf("received %d of %d datagrams: %v", got, len(sent), err)
		}
		for i := range n {
			if got == len(sent) {
				t.Fatalf("received more than the %d datagrams sent", len(sent))
			}
			if d := b.bufs[i][:b.sizes[i]]; !bytes.Equal(d, sent[got]) {
				t.Fatalf("datagram %d: got %d bytes %x..., want %d bytes %x...",
					got, len(d), head(d), len(sent[got]), head(sent[got]))
			}
			if b.srcs[i] != from {
				t.Fatalf("datagram %d from %v, want %v", got, b.srcs[i], from)
			}
			got++
		}
	}
}

func head(b []byte) []byte { return b[:min(len(b), 8)] }

// variants lists the offload settings every round trip runs with.
var variants = []struct {
	name     string
	tx, rx   Options
	needsGSO bool
	needsGRO bool
}{
	{name: "plain"},
	{name: "GSO", tx: Options{GSO: true}, needsGSO: true},
	{name: "GRO", tx: Options{GSO: true}, rx: Options{GRO: true}, needsGSO: true, needsGRO: true},
}

// skipUnsupported skips a variant whose offloads the kernel lacks.
func skipUnsupported(t *testing.T, tx, rx *stdConn, needsGSO, needsGRO bool) {
	t.Helper()
	if needsGSO && !tx.Effective().GSO {
		t.Skip("kernel lacks UDP_SEGMENT")
	}
	if needsGRO && !rx.Effective().GRO {
		t.Skip("kernel lacks UDP_GRO")
	}
}

// TestRoundTrip sends 64 datagrams of distinct sizes and contents and
// receives them in order, with their source.
func TestRoundTrip(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			a, b := listen(t, v.tx), listen(t, v.rx)
			skipUnsupported(t, a, b, v.needsGSO, v.needsGRO)
			sent, dsts := datagrams(64, func(i int) int { return 1 + i*23 }, b.LocalAddr())
			n, err := a.WriteBatch(sent, dsts)
			if n != len(sent) || err != nil {
				t.Fatalf("WriteBatch = %d, %v, want %d, nil", n, err, len(sent))
			}
			receive(t, b, newBatch(64, 2048), sent, a.LocalAddr())
		})
	}
}

// TestSegmentRuns sends runs that GSO coalesces, and reads them with fewer
// buffers than one coalesced message carries.
func TestSegmentRuns(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			a, b := listen(t, v.tx), listen(t, v.rx)
			skipUnsupported(t, a, b, v.needsGSO, v.needsGRO)
			// Equal sizes with a short datagram at 70 and the end, and
			// 150 datagrams: more than a chunk and more than a message.
			size := func(i int) int {
				if i == 70 || i == 149 {
					return 100
				}
				return 1200
			}
			sent, dsts := datagrams(150, size, b.LocalAddr())
			n, err := a.WriteBatch(sent, dsts)
			if n != len(sent) || err != nil {
				t.Fatalf("WriteBatch = %d, %v, want %d, nil", n, err, len(sent))
			}
			if v.needsGSO && a.tx.msgs != 1 {
				t.Errorf("last chunk of 22 datagrams took %d messages, want 1", a.tx.msgs)
			}
			rb := newBatch(10, 2048)
			if v.needsGRO {
				// The first message carries 54 datagrams: 10 are
				// delivered, the rest of it waits.
				receive(t, b, rb, sent[:10], a.LocalAddr())
				if b.rx.next != 0 || b.rx.off == 0 {
					t.Errorf("after 10 datagrams, at message %d byte %d: not coalesced", b.rx.next, b.rx.off)
				}
				sent = sent[10:]
			}
			receive(t, b, rb, sent, a.LocalAddr())
		})
	}
}

// TestManyDestinations interleaves two destinations in one batch.
func TestManyDestinations(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			a, b, c := listen(t, v.tx), listen(t, v.rx), listen(t, v.rx)
			skipUnsupported(t, a, b, v.needsGSO, v.needsGRO)
			sent, dsts := datagrams(64, func(int) int { return 500 }, b.LocalAddr())
			var toB, toC [][]byte
			for i := range dsts {
				if i%4 < 2 { // runs of two, to give GSO something
					toB = append(toB, sent[i])
				} else {
					dsts[i] = c.LocalAddr()
					toC = append(toC, sent[i])
				}
			}
			if n, err := a.WriteBatch(sent, dsts); n != len(sent) || err != nil {
				t.Fatalf("WriteBatch = %d, %v, want %d, nil", n, err, len(sent))
			}
			receive(t, b, newBatch(64, 2048), toB, a.LocalAddr())
			receive(t, c, newBatch(64, 2048), toC, a.LocalAddr())
		})
	}
}

// TestRefusedDatagrams checks that datagrams the kernel refuses do not
// stop the batch.
func TestRefusedDatagrams(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			a, b := listen(t, v.tx), listen(t, v.rx)
			skipUnsupported(t, a, b, v.needsGSO, v.needsGRO)
			sent, dsts := datagrams(8, func(int) int { return 100 }, b.LocalAddr())
			sent[2] = make([]byte, 70000) // EMSGSIZE
			dsts[4] = netip.AddrPortFrom(loopback.Addr(), 0)
			dsts[6] = netip.MustParseAddrPort("[::1]:8285")
			n, err := a.WriteBatch(sent, dsts)
			var werr *underlay.WriteError
			if n != 5 || !errors.As(err, &werr) || werr.Dropped != 3 {
				t.Fatalf("WriteBatch = %d, %v, want 5 and a *WriteError for 3", n, err)
			}
			receive(t, b, newBatch(8, 2048), [][]byte{sent[0], sent[1], sent[3], sent[5], sent[7]}, a.LocalAddr())

			// Each error on its own.
			for _, tc := range []struct {
				buf  []byte
				dst  netip.AddrPort
				want error
			}{
				{make([]byte, 70000), b.LocalAddr(), unix.EMSGSIZE},
				{sent[0], dsts[4], unix.EINVAL},
				{sent[0], dsts[6], unix.EAFNOSUPPORT},
			} {
				n, err := a.WriteBatch([][]byte{tc.buf}, []netip.AddrPort{tc.dst})
				if !errors.As(err, &werr) || n != 0 || werr.Addr != tc.dst || !errors.Is(err, tc.want) {
					t.Errorf("WriteBatch of %d bytes to %v = %d, %v, want 0 and a *WriteError for %v",
						len(tc.buf), tc.dst, n, err, tc.want)
				}
			}
		})
	}
}

// TestPartialSends makes sendmmsg take at most three messages per call, as
// when the send buffer fills up, past a datagram the kernel refuses.
func TestPartialSends(t *testing.T) {
	t.Parallel()
	a, b := listen(t, Options{}), listen(t, Options{})
	calls := 0
	a.initTx(func(fd uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) {
		calls++
		return underlay.Sendmmsg(fd, msgs[:min(3, len(msgs))])
	})
	sent, dsts := datagrams(64, func(i int) int { return 1 + i }, b.LocalAddr())
	sent[10] = make([]byte, 70000)
	n, err := a.WriteBatch(sent, dsts)
	var werr *underlay.WriteError
	if n != 63 || !errors.As(err, &werr) || werr.Dropped != 1 || !errors.Is(err, unix.EMSGSIZE) {
		t.Fatalf("WriteBatch = %d, %v, want 63 and a *WriteError for 1", n, err)
	}
	if calls < 64/3 {
		t.Errorf("%d sendmmsg calls for 64 datagrams, 3 at a time", calls)
	}
	receive(t, b, newBatch(64, 2048), append(sent[:10:10], sent[11:]...), a.LocalAddr())
}

// TestGSOFallback makes every segmented message fail with EIO, as from a
// device that cannot segment UDP: the batch arrives, sent unsegmented, and
// WriteBatch, Effective and Counters say GSO is off. The driver's tests
// (package underlay) cover the other refusals.
func TestGSOFallback(t *testing.T) {
	t.Parallel()
	a, b := listen(t, Options{GSO: true}), listen(t, Options{})
	if !a.Effective().GSO {
		t.Skip("kernel lacks UDP_SEGMENT")
	}
	a.initTx(func(fd uintptr, msgs []unix.Mmsghdr) (int, syscall.Errno) {
		if msgs[0].Hdr.Controllen > 0 {
			return 0, unix.EIO
		}
		return underlay.Sendmmsg(fd, msgs)
	})
	sent, dsts := datagrams(100, func(i int) int { return 1000 - i/10 }, b.LocalAddr())
	if n, err := a.WriteBatch(sent, dsts); n != len(sent) || !errors.Is(err, underlay.ErrGSODisabled) {
		t.Fatalf("WriteBatch = %d, %v, want %d and GSO turned off", n, err, len(sent))
	}
	if a.Effective().GSO || a.Counters()[underlay.CounterGSODisabled] != 1 {
		t.Errorf("GSO on = %v, counters %v, want GSO off and counted", a.Effective().GSO, a.Counters())
	}
	receive(t, b, newBatch(64, 2048), sent, a.LocalAddr())
	if n, err := a.WriteBatch(sent[:1], dsts[:1]); n != 1 || err != nil {
		t.Errorf("next WriteBatch = %d, %v, want 1, nil: GSO is reported off once", n, err)
	}
	receive(t, b, newBatch(1, 2048), sent[:1], a.LocalAddr())
}

func TestCloseUnblocksReadBatch(t *testing.T) {
	t.Parallel()
	c, err := Listen(loopback, Options{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		b := newBatch(4, 2048)
		_, err := c.ReadBatch(b.bufs, b.sizes, b.srcs)
		errc <- err
	}()
	waitParked("TestCloseUnblocksReadBatch")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != net.ErrClosed {
		t.Errorf("pending ReadBatch returned %v, want net.ErrClosed", err)
	}
	b := newBatch(1, 2048)
	if _, err := c.ReadBatch(b.bufs, b.sizes, b.srcs); err != net.ErrClosed {
		t.Errorf("ReadBatch after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.WriteBatch(b.bufs, []netip.AddrPort{c.LocalAddr()}); err != net.ErrClosed {
		t.Errorf("WriteBatch after Close: %v, want net.ErrClosed", err)
	}
	if err := c.Close(); err != net.ErrClosed {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	c := listen(t, Options{})
	if c.LocalAddr().Addr() != loopback.Addr() || c.LocalAddr().Port() == 0 {
		t.Errorf("LocalAddr() = %v, want 127.0.0.1 and a port", c.LocalAddr())
	}
	if c.BatchSize() != DefaultBatchSize {
		t.Errorf("BatchSize() = %d, want %d", c.BatchSize(), DefaultBatchSize)
	}
	eff := c.Effective()
	if eff.RecvBuffer <= 0 || eff.SendBuffer <= 0 {
		t.Errorf("Effective buffers = %d, %d", eff.RecvBuffer, eff.SendBuffer)
	}
	if os.Geteuid() == 0 && (eff.RecvBuffer != DefaultBuffer || eff.SendBuffer != DefaultBuffer) {
		t.Errorf("as root, Effective buffers = %d, %d, want %d", eff.RecvBuffer, eff.SendBuffer, DefaultBuffer)
	}
	if got := listen(t, Options{BatchSize: 8, RecvBuffer: -1}).BatchSize(); got != 8 {
		t.Errorf("BatchSize() = %d, want 8", got)
	}

	for _, tc := range []struct {
		addr string
		opts Options
	}{
		{"[::1]:0", Options{}},
		{"127.0.0.1:0", Options{BatchSize: 2000}},
		{"127.0.0.1:0", Options{BatchSize: -1}},
		{c.LocalAddr().String(), Options{}}, // in use
	} {
		if c, err := Listen(netip.MustParseAddrPort(tc.addr), tc.opts); err == nil {
			c.Close()
			t.Errorf("Listen(%s, %+v) succeeded", tc.addr, tc.opts)
		}
	}
}

func TestReusePort(t *testing.T) {
	t.Parallel()
	first := listen(t, Options{ReusePort: true})
	second, err := Listen(first.LocalAddr(), Options{ReusePort: true})
	if err != nil {
		t.Fatalf("second SO_REUSEPORT socket on %v: %v", first.LocalAddr(), err)
	}
	second.Close()
}

// TestAllocs checks that a WriteBatch and a ReadBatch allocate nothing.
func TestAllocs(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			a, b := listen(t, v.tx), listen(t, v.rx)
			skipUnsupported(t, a, b, v.needsGSO, v.needsGRO)
			sent, dsts := datagrams(16, func(int) int { return 1000 }, b.LocalAddr())
			rb := newBatch(16, 2048)
			// A lost datagram fails the test instead of hanging it.
			watchdog := time.AfterFunc(time.Minute, func() { b.Close() })
			defer watchdog.Stop()
			var err error
			allocs := testing.AllocsPerRun(100, func() {
				if _, err = a.WriteBatch(sent, dsts); err != nil {
					return
				}
				for got := 0; got < len(sent); {
					var n int
					if n, err = b.ReadBatch(rb.bufs, rb.sizes, rb.srcs); err != nil {
						return
					}
					got += n
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if allocs != 0 {
				t.Errorf("%v allocations per WriteBatch and ReadBatch, want 0", allocs)
			}
		})
	}
}

// BenchmarkRoundTrip sends a batch of 1400-byte datagrams over loopback and
// receives it, in one goroutine.
func BenchmarkRoundTrip(b *testing.B) {
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			a, c := listen(b, v.tx), listen(b, v.rx)
			if v.needsGSO && !a.Effective().GSO || v.needsGRO && !c.Effective().GRO {
				b.Skip("kernel lacks the offload")
			}
			sent, dsts := datagrams(DefaultBatchSize, func(int) int { return 1400 }, c.LocalAddr())
			rb := newBatch(DefaultBatchSize, 2048)
			b.SetBytes(int64(len(sent) * 1400))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.WriteBatch(sent, dsts); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < len(sent); {
					n, err := c.ReadBatch(rb.bufs, rb.sizes, rb.srcs)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
		})
	}
}

// waitParked waits until a goroutine whose stack mentions fn is asleep in
// a system call (the socket is blocking). It has no deadline of its own:
// the test's is enough.
func waitParked(fn string) {
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, fn) && strings.Contains(g, "[syscall") {
				return
			}
		}
		time.Sleep(time.Millisecond)
	}
	panic(fn + ": the goroutine never parked in a read")
}

// TestBusyPoll sends datagrams one at a time, each once the last was read,
// with and without GRO, with the busy-poll window open: a reader that
// finds the socket empty polls it, and every datagram arrives intact.
func TestBusyPoll(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			rx := v.rx
			rx.BusyPoll = time.Second
			a, b := listen(t, v.tx), listen(t, rx)
			skipUnsupported(t, a, b, v.needsGSO, v.needsGRO)
			b.rx.win.Sleeping()
			b.rx.win.Woke() // a short sleep: the window opens, to 250 ms
			sent, dsts := datagrams(50, func(i int) int { return 1 + i*13 }, b.LocalAddr())
			read := make(chan struct{}, len(sent)) // the reader never blocks on it
			go func() {
				defer close(read)
				rb := newBatch(4, 2048)
				for i := range sent {
					receive(t, b, rb, sent[i:i+1], a.LocalAddr())
					read <- struct{}{}
				}
			}()
			for i := range sent {
				if n, err := a.WriteBatch(sent[i:i+1], dsts[i:i+1]); n != 1 || err != nil {
					t.Fatalf("WriteBatch = %d, %v, want 1, nil", n, err)
				}
				if _, ok := <-read; !ok {
					t.Fatalf("the reader stopped at datagram %d", i)
				}
			}
			// The window is far longer than a round trip here: polls
			// caught datagrams, or polling is broken.
			if st := b.BusyPollStats(); st.Caught == 0 {
				t.Errorf("no ReadBatch caught a datagram by polling (%+v)", st)
			}
		})
	}
}

// TestCloseEndsBusyPoll closes a Conn whose ReadBatch polls: shutdown(2)
// must end the poll as it ends a sleep.
func TestCloseEndsBusyPoll(t *testing.T) {
	t.Parallel()
	c := listen(t, Options{BusyPoll: time.Hour})
	c.rx.win.Sleeping()
	c.rx.win.Woke() // a short sleep: the window opens, to a quarter hour
	if c.rx.win.Current() == 0 {
		t.Fatal("the window did not open")
	}
	errc := make(chan error, 1)
	go func() {
		b := newBatch(4, 2048)
		_, err := c.ReadBatch(b.bufs, b.sizes, b.srcs)
		errc <- err
	}()
	waitParked("TestCloseEndsBusyPoll") // polling: in sched_yield, or recvmmsg
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != net.ErrClosed {
		t.Errorf("polling ReadBatch returned %v, want net.ErrClosed", err)
	}
}
