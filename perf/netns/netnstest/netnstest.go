// Package netnstest gives a test network namespaces of its own, built on
// package netns, so that every test that needs one makes, enters and
// removes it the same way.
package netnstest

import (
	"testing"

	"github.com/overlayd/overlayd/perf/netns"
)

// New skips tb unless namespaces can be used here (netns.Available), and
// otherwise creates a fresh namespace with a unique name made from tag
// (netns.Prefix), as bare as unshare(2) makes one: nothing in it, not even
// lo up. It is deleted when tb ends, after the cleanups registered later,
// such as closing what the test opened in it.
//
// Enter it with [netns.NS.Do]: the function runs on a locked OS thread that
// is thrown away afterwards, and sockets and devices made there stay in the
// namespace, usable from any goroutine.
func New(tb testing.TB, tag string) *netns.NS {
	tb.Helper()
	if err := netns.Available(); err != nil {
		tb.Skipf("skipping: %v", err)
	}
	name := netns.Prefix(tag)
	ns, err := netns.New(name)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			tb.Errorf("namespace left behind: %v", err)
		}
	})
	return ns
}
