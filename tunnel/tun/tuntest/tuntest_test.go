package tuntest

import (
	"errors"
	"io"
	"os"
	"testing"
)

func TestChannelDevice(t *testing.T) {
	d := NewChannelDevice("flannel0", 1472)
	if mtu, err := d.MTU(); d.Name() != "flannel0" || mtu != 1472 || err != nil || d.BatchSize() != BatchSize {
		t.Fatalf("Name, MTU, BatchSize = %q, %d, %v, %d", d.Name(), mtu, err, d.BatchSize())
	}

	for _, p := range []string{"a", "bb", "ccc"} {
		d.Inbound <- []byte(p)
	}
	bufs := [][]byte{make([]byte, 8), make([]byte, 8)}
	sizes := make([]int, 2)
	n, err := d.Read(bufs, sizes, 4)
	if n != 2 || err != nil || string(bufs[0][4:4+sizes[0]]) != "a" || string(bufs[1][4:4+sizes[1]]) != "bb" {
		t.Errorf("first Read = %d, %v, %q", n, err, bufs[:n])
	}
	n, err = d.Read(bufs, sizes, 4)
	if n != 1 || err != nil || string(bufs[0][4:4+sizes[0]]) != "ccc" {
		t.Errorf("second Read = %d, %v, %q", n, err, bufs[:n])
	}
	d.Inbound <- []byte("too long")
	if _, err := d.Read(bufs, sizes, 4); !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("Read of a packet longer than its buffer: %v, want io.ErrShortBuffer", err)
	}

	out := [][]byte{[]byte("hdr:one"), []byte("hdr:two")}
	if n, err := d.Write(out, 4); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	out[0][4] = 'X' // the device must have copied
	for _, want := range []string{"one", "two"} {
		if got := string(<-d.Outbound); got != want {
			t.Errorf("Outbound got %q, want %q", got, want)
		}
	}
}

func TestChannelDeviceClose(t *testing.T) {
	d := NewChannelDevice("flannel0", 1472)
	errc := make(chan error)
	go func() {
		_, err := d.Read([][]byte{make([]byte, 8)}, make([]int, 1), 0)
		errc <- err
	}()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != os.ErrClosed {
		t.Errorf("pending Read returned %v, want os.ErrClosed", err)
	}
	if _, err := d.Write([][]byte{{0x45}}, 0); err != os.ErrClosed {
		t.Errorf("Write after Close: %v, want os.ErrClosed", err)
	}
	if err := d.Close(); err != os.ErrClosed {
		t.Errorf("second Close: %v, want os.ErrClosed", err)
	}
}
