package tun

import (
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWater runs a packet each way through the water adapter and closes it
// under a pending Read.
func TestWater(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	var dev Device
	var err error
	ns.Do(func() { dev, err = CreateWater("ovlw0") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	if dev.Name() != "ovlw0" || dev.BatchSize() != 1 {
		t.Errorf("Name(), BatchSize() = %q, %d, want ovlw0, 1", dev.Name(), dev.BatchSize())
	}
	ns.configure(t, "ovlw0", testMTU)
	var mtu int
	ns.Do(func() { mtu, err = dev.MTU() })
	if mtu != testMTU || err != nil {
		t.Errorf("MTU() = %d, %v, want %d", mtu, err, testMTU)
	}

	// Out of the kernel.
	dst := netip.AddrPortFrom(remote, 9)
	fd := ns.dialUDP(t, dst)
	if _, err := unix.Write(fd, []byte("out")); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := newBatch(4, testOffset+testMTU)
	for {
		n, err := dev.Read(bufs, sizes, testOffset)
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("Read returned %d packets, want 1", n)
		}
		if payload, ok := udpPayload(bufs[0][testOffset:testOffset+sizes[0]], dst); ok {
			if string(payload) != "out" {
				t.Fatalf("read payload %q, want %q", payload, "out")
			}
			break
		}
	}

	// Into the kernel.
	sock := ns.listenUDP(t, netip.AddrPortFrom(local, 0))
	laddr := sock.LocalAddr().(interface{ AddrPort() netip.AddrPort }).AddrPort()
	pkts := [][]byte{
		withHeadroom(udpPacket(t, 4000, laddr, []byte("in 1")), testOffset),
		withHeadroom(udpPacket(t, 4000, laddr, []byte("in 2")), testOffset),
	}
	if n, err := dev.Write(pkts, testOffset); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v, want 2, nil", n, err)
	}
	buf := make([]byte, 16)
	for _, want := range []string{"in 1", "in 2"} {
		n, _, err := sock.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if string(buf[:n]) != want {
			t.Errorf("socket got %q, want %q", buf[:n], want)
		}
	}

	errc := make(chan error, 1)
	go func() {
		bufs, sizes := newBatch(1, testMTU)
		for {
			// Skip whatever the kernel still sends.
			if _, err := dev.Read(bufs, sizes, 0); err != nil {
				errc <- err
				return
			}
		}
	}()
	waitParked("TestWater")
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != os.ErrClosed {
		t.Errorf("pending Read returned %v, want os.ErrClosed", err)
	}
	if err := dev.Close(); err != os.ErrClosed {
		t.Errorf("second Close: %v, want os.ErrClosed", err)
	}
}
