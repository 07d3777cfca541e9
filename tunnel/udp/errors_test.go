package udp

import (
	"errors"
	"syscall"
	"testing"
)

func TestOffloadErrorIsTyped(t *testing.T) {
	err := errors.Join(&OffloadError{Offload: "UDP_GRO (Linux 5.0)", Err: syscall.ENOPROTOOPT})
	if !errors.Is(err, ErrOffloadUnsupported) {
		t.Fatal("an OffloadError does not match ErrOffloadUnsupported")
	}
	if !errors.Is(err, syscall.ENOPROTOOPT) {
		t.Fatal("an OffloadError hides its cause")
	}
	var oe *OffloadError
	if !errors.As(err, &oe) || oe.Offload != "UDP_GRO (Linux 5.0)" {
		t.Fatalf("errors.As: %v", oe)
	}
}

// On this machine's kernel both offloads exist: Listen reports none missing.
func TestListenReportsNoMissingOffloads(t *testing.T) {
	c, err := Listen(loopback, Options{GSO: true, GRO: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc := c.(Configured)
	if err := cc.Unsupported(); err != nil {
		eff := cc.Effective()
		if eff.GSO && eff.GRO {
			t.Fatalf("offloads on but reported missing: %v", err)
		}
		t.Logf("kernel lacks: %v", err) // an old kernel: informational
	}
}
