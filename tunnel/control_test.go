package tunnel

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestListenControl: an abstract name is served without a file and only
// once per network namespace; a path is served as a file, replacing a
// stale one.
func TestListenControl(t *testing.T) {
	abstract := fmt.Sprintf("@overlayd-test/%d", os.Getpid())
	file := filepath.Join(t.TempDir(), "sub", "ctl.sock")
	for _, path := range []string{abstract, file} {
		ln, err := listenControl(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("%s: dial: %v", path, err)
		}
		ac, err := ln.Accept() // our own user: served
		if err != nil {
			t.Fatalf("%s: accept: %v", path, err)
		}
		ac.Close()
		c.Close()
		if path == abstract {
			if ln2, err := listenControl(path); err == nil {
				ln2.Close()
				t.Errorf("%s: a second listener in the same network namespace was allowed", path)
			}
		}
		ln.Close()
	}
}
