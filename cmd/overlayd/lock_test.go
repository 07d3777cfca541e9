package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestLockInstanceRefusesSecond: a second daemon with the same TUN name in
// this network namespace is refused, naming the first one's pid; the lock
// frees when the first lets go.
func TestLockInstanceRefusesSecond(t *testing.T) {
	tun := fmt.Sprintf("ovdlock%d", os.Getpid())
	release, err := lockInstance(tun)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockInstance(tun)
	if err == nil {
		release()
		t.Fatal("second lock taken while the first is held")
	}
	want := fmt.Sprintf("overlayd pid %d already runs with --tun-name %s", os.Getpid(), tun)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	release()
	again, err := lockInstance(tun)
	if err != nil {
		t.Fatalf("lock not freed by release: %v", err)
	}
	again()
}
