package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	testMTU    = 1472 // flannel0's MTU over a 1500-byte underlay
	testOffset = 8    // headroom, as for the VXLAN header
)

// TestReadBatch sends datagrams through the overlay route and reads them
// off the TUN, several per Read.
func TestReadBatch(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dev := ns.create(t, "ovl%d", 1)[0]
	if got := dev.Name(); got != "ovl0" {
		t.Errorf("Name() = %q, want ovl0", got)
	}
	ns.configure(t, dev.Name(), testMTU)

	dst := netip.AddrPortFrom(remote, 9)
	fd := ns.dialUDP(t, dst)
	const count = 10
	for i := range count {
		if _, err := unix.Write(fd, []byte(fmt.Sprint("datagram ", i))); err != nil {
			t.Fatal(err)
		}
	}

	bufs, sizes := newBatch(16, testOffset+testMTU)
	got, reads := 0, 0
	for got < count {
		n, err := dev.Read(bufs, sizes, testOffset)
		if err != nil {
			t.Fatal(err)
		}
		reads++
		for i := range n {
			payload, ok := udpPayload(bufs[i][testOffset:testOffset+sizes[i]], dst)
			if !ok {
				continue // the kernel's own traffic
			}
			if want := fmt.Sprint("datagram ", got); string(payload) != want {
				t.Fatalf("packet %d carries %q, want %q", got, payload, want)
			}
			got++
		}
	}
	if reads >= count {
		t.Errorf("%d Reads for %d queued packets: Read does not batch", reads, count)
	}
}

// TestWriteBatch writes packets for the local address into the TUN and
// receives them on a socket, past a packet the kernel refuses.
func TestWriteBatch(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1)[0]
	ns.configure(t, dev.Name(), testMTU)
	sock := ns.listenUDP(t, netip.AddrPortFrom(local, 0))
	dst := sock.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()

	bad := make([]byte, 28) // version nibble 0: neither IPv4 nor IPv6
	bufs := [][]byte{
		withHeadroom(udpPacket(t, 4000, dst, []byte("first")), testOffset),
		withHeadroom(bad, testOffset),
		withHeadroom(udpPacket(t, 4000, dst, []byte("second")), testOffset),
	}
	n, err := dev.Write(bufs, testOffset)
	if n != 2 {
		t.Errorf("Write accepted %d packets, want 2", n)
	}
	var werr *WriteError
	if !errors.As(err, &werr) || werr.Dropped != 1 || !errors.Is(err, unix.EINVAL) {
		t.Errorf("Write error = %v, want a *WriteError for 1 packet refused with EINVAL", err)
	} else if !slices.Equal(werr.Refused, []int{1}) {
		t.Errorf("refused packets %v, want [1]", werr.Refused)
	}

	buf := make([]byte, 64)
	for _, want := range []string{"first", "second"} {
		n, from, err := sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) != want || from != netip.AddrPortFrom(remote, 4000) {
			t.Errorf("socket got %q from %v, want %q from %v:4000", buf[:n], from, want, remote)
		}
	}
}

// TestMultiQueue opens two queues, answers echo requests written to one of
// them and reads the replies and other traffic from both.
func TestMultiQueue(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	devs := ns.create(t, "ovlmq0", 2)
	if len(devs) != 2 {
		t.Fatalf("Create returned %d queues, want 2", len(devs))
	}
	for _, d := range devs {
		if d.Name() != "ovlmq0" {
			t.Errorf("queue Name() = %q, want ovlmq0", d.Name())
		}
	}
	ns.configure(t, "ovlmq0", testMTU)

	// A single-queue open of the same interface is refused by the kernel.
	var single []Device
	var err error
	ns.Do(func() { single, err = Create("ovlmq0", 1) })
	for _, d := range single {
		d.Close()
	}
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("single-queue Create of a multi-queue interface: %v, want EINVAL", err)
	}

	type seen struct{ echo, udp int }
	results := make(chan seen, 1024)
	stop := readQueues(t, devs, func(_ int, pkt []byte) {
		if _, seq, ok := echoReply(pkt); ok {
			results <- seen{echo: int(seq)}
		} else if _, ok := udpPayload(pkt, netip.AddrPortFrom(remote, 9)); ok {
			results <- seen{udp: 1}
		}
	})

	const echoes, flows = 8, 16
	var pings [][]byte
	for seq := 1; seq <= echoes; seq++ {
		pings = append(pings, echoRequest(t, 7, uint16(seq), []byte("ping")))
	}
	if n, err := devs[1].Write(pings, 0); n != echoes || err != nil {
		t.Fatalf("Write of %d echo requests: %d, %v", echoes, n, err)
	}
	for range flows { // each from its own port, so they hash to either queue
		fd := ns.dialUDP(t, netip.AddrPortFrom(remote, 9))
		if _, err := unix.Write(fd, []byte("flow")); err != nil {
			t.Fatal(err)
		}
	}

	replies := make(map[int]bool)
	udp := 0
	for len(replies) < echoes || udp < flows {
		s := <-results
		if s.echo > 0 {
			replies[s.echo] = true
		}
		udp += s.udp
	}
	stop()
}

// TestCloseUnblocksRead closes a queue under a Read that is asleep in
// poll.
func TestCloseUnblocksRead(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1)[0] // down: nothing will arrive

	errc := make(chan error, 1)
	go func() {
		bufs, sizes := newBatch(4, testMTU)
		_, err := dev.Read(bufs, sizes, 0)
		errc <- err
	}()
	waitParked("TestCloseUnblocksRead")
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != os.ErrClosed {
		t.Errorf("pending Read returned %v, want os.ErrClosed", err)
	}

	bufs, sizes := newBatch(1, testMTU)
	if _, err := dev.Read(bufs, sizes, 0); err != os.ErrClosed {
		t.Errorf("Read after Close: %v, want os.ErrClosed", err)
	}
	if _, err := dev.Write(bufs, 0); err != os.ErrClosed {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
	if _, err := dev.MTU(); err != os.ErrClosed {
		t.Errorf("MTU after Close: %v, want os.ErrClosed", err)
	}
	if err := dev.Close(); err != os.ErrClosed {
		t.Errorf("second Close: %v, want os.ErrClosed", err)
	}
}

// TestDeletedInterface reads from a queue whose interface is deleted.
func TestDeletedInterface(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1)[0]
	var err error
	ns.Do(func() { err = netlink.LinkDel(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "ovl0"}}) })
	if err != nil {
		t.Fatal(err)
	}
	bufs, sizes := newBatch(1, testMTU)
	if _, err := dev.Read(bufs, sizes, 0); !errors.Is(err, ErrDeleted) || !strings.Contains(err.Error(), "ovl0") {
		t.Errorf("Read of a deleted interface: %v, want ErrDeleted, naming ovl0", err)
	}
	if _, err := dev.Write(bufs, 0); !errors.Is(err, ErrDeleted) {
		t.Errorf("Write to a deleted interface: %v, want ErrDeleted", err)
	}
	if err := dev.Close(); err != nil {
		t.Errorf("Close of a deleted interface's queue: %v", err)
	}
	if _, err := dev.Read(bufs, sizes, 0); err != os.ErrClosed {
		t.Errorf("Read after Close: %v, want os.ErrClosed", err)
	}
}

func TestMTUAndRename(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1)[0]
	ns.configure(t, "ovl0", testMTU)
	if mtu, err := dev.MTU(); mtu != testMTU || err != nil {
		t.Errorf("MTU() = %d, %v, want %d", mtu, err, testMTU)
	}
	if got := dev.BatchSize(); got != nativeBatchSize {
		t.Errorf("BatchSize() = %d, want %d", got, nativeBatchSize)
	}

	var err error
	ns.Do(func() {
		link, lerr := netlink.LinkByName("ovl0")
		if lerr != nil {
			err = lerr
			return
		}
		if err = netlink.LinkSetDown(link); err == nil {
			err = netlink.LinkSetName(link, "flannel0")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := dev.Name(); got != "flannel0" {
		t.Errorf("Name() after rename = %q, want flannel0", got)
	}
	if mtu, err := dev.MTU(); mtu != testMTU || err != nil {
		t.Errorf("MTU() after rename = %d, %v, want %d", mtu, err, testMTU)
	}
}

func TestCreateErrors(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	var err error
	ns.Do(func() { _, err = Create("ovl0", 0) })
	if err == nil {
		t.Error("Create with 0 queues succeeded")
	}
	ns.Do(func() { _, err = Create("a-name-too-long-for-linux", 1) })
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("Create with a 25-byte name: %v, want EINVAL", err)
	}
}

// TestAllocs checks that a Read and a Write allocate nothing.
func TestAllocs(t *testing.T) {
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1)[0]
	ns.configure(t, "ovl0", testMTU)
	fd := ns.dialUDP(t, netip.AddrPortFrom(remote, 9))
	sock := ns.listenUDP(t, netip.AddrPortFrom(local, 0))
	dst := sock.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()

	bufs, sizes := newBatch(8, testOffset+testMTU)
	payload := []byte("allocs")
	var err error
	allocs := testing.AllocsPerRun(200, func() {
		if _, err = unix.Write(fd, payload); err != nil {
			return
		}
		_, err = dev.Read(bufs, sizes, testOffset)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("Read: %v allocations per call, want 0", allocs)
	}

	pkts := [][]byte{
		withHeadroom(udpPacket(t, 4000, dst, payload), testOffset),
		withHeadroom(udpPacket(t, 4001, dst, payload), testOffset),
	}
	allocs = testing.AllocsPerRun(200, func() {
		_, err = dev.Write(pkts, testOffset)
	})
	if err != nil {
		t.Fatal(err)
	}
	if allocs != 0 {
		t.Errorf("Write: %v allocations per call, want 0", allocs)
	}
}

// BenchmarkWriteRead writes batches of echo requests into the TUN and
// reads the kernel's replies back.
func BenchmarkWriteRead(b *testing.B) {
	ns := newNetns(b)
	dev := ns.create(b, "ovl0", 1)[0]
	ns.configure(b, "ovl0", testMTU)

	const batch = 32
	pings := make([][]byte, batch)
	for i := range pings {
		pings[i] = withHeadroom(echoRequest(b, 1, uint16(i), make([]byte, 56)), testOffset)
	}
	bufs, sizes := newBatch(batch, testOffset+testMTU)
	b.SetBytes(int64(batch * len(pings[0][testOffset:])))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := dev.Write(pings, testOffset); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < batch; {
			n, err := dev.Read(bufs, sizes, testOffset)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

// TestBusyPoll reads packets that come one at a time, each sent once the
// last was read, with the busy-poll window open: a reader that finds the
// queue empty polls it, and every packet arrives intact.
func TestBusyPoll(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1, WithBusyPoll(time.Second))[0]
	nd := dev.(*nativeDevice)
	nd.readWin.Sleeping()
	nd.readWin.Woke() // a short sleep: the window opens, to 250 ms
	ns.configure(t, "ovl0", testMTU)
	dst := netip.AddrPortFrom(remote, 9)
	fd := ns.dialUDP(t, dst)

	const count = 50
	read := make(chan error, count+1) // the reader never blocks on it
	// A lost packet must fail the test, not hang it: closing the queue
	// ends the pending Read. The bound is generous, not a timing check.
	watchdog := time.AfterFunc(time.Minute, func() { dev.Close() })
	defer watchdog.Stop()
	go func() {
		defer close(read)
		bufs, sizes := newBatch(4, testOffset+testMTU)
		for i := 0; i < count; {
			n, err := dev.Read(bufs, sizes, testOffset)
			if err != nil {
				read <- err
				return
			}
			for j := range n {
				payload, ok := udpPayload(bufs[j][testOffset:testOffset+sizes[j]], dst)
				if !ok {
					continue // the kernel's own traffic
				}
				if want := fmt.Sprint("datagram ", i); string(payload) != want {
					read <- fmt.Errorf("read %q, want %q", payload, want)
					return
				}
				i++
				read <- nil
			}
		}
	}()
	for i := range count {
		if _, err := unix.Write(fd, []byte(fmt.Sprint("datagram ", i))); err != nil {
			t.Fatal(err)
		}
		if err, ok := <-read; !ok || err != nil {
			t.Fatalf("packet %d: %v (reader running: %v)", i, err, ok)
		}
	}
	// The window is far longer than a round trip here: polls caught
	// packets, or polling is broken.
	if st := nd.readWin.Stats(); st.Caught == 0 {
		t.Errorf("no Read caught a packet by polling (%+v)", st)
	}
}

// TestCloseEndsBusyPoll closes a queue whose Read polls with a window far
// longer than any test: Close must end the poll, not wait it out.
func TestCloseEndsBusyPoll(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dev := ns.create(t, "ovl0", 1, WithBusyPoll(time.Hour))[0] // down: nothing will arrive
	nd := dev.(*nativeDevice)
	nd.readWin.Sleeping()
	nd.readWin.Woke() // a short sleep: the window opens, to a quarter hour
	if nd.readWin.Current() == 0 {
		t.Fatal("the window did not open")
	}
	errc := make(chan error, 1)
	go func() {
		bufs, sizes := newBatch(4, testMTU)
		_, err := dev.Read(bufs, sizes, 0)
		errc <- err
	}()
	waitParked("TestCloseEndsBusyPoll") // polling: in sched_yield, or read
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != os.ErrClosed {
		t.Errorf("polling Read returned %v, want os.ErrClosed", err)
	}
}
