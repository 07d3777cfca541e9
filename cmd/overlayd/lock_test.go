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

// TestStatusFindsDaemonOnOtherSocket: a daemon whose control socket is not
// the default is not reported as absent: status names its pid and says
// to pass its --control-socket.
func TestStatusFindsDaemonOnOtherSocket(t *testing.T) {
	tun := fmt.Sprintf("ovdstat%d", os.Getpid())
	if code, _, errOut := help(t, "status", "--tun-name", tun); code != 1 || !strings.Contains(errOut, "no overlayd") {
		t.Errorf("no daemon: exit %d, stderr %s; want 1, saying none runs", code, errOut)
	}
	release, err := lockInstance(tun)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	code, _, errOut := help(t, "status", "--tun-name", tun)
	want := fmt.Sprintf("overlayd pid %d runs with --tun-name %s in this network namespace but not on the default control socket", os.Getpid(), tun)
	if code != 1 || !strings.Contains(errOut, want) || !strings.Contains(errOut, "pass the same to overlayd status") {
		t.Errorf("exit %d, stderr %s; want 1 and %q", code, errOut, want)
	}
}
