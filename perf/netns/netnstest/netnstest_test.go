package netnstest

import (
	"os"
	"testing"

	"github.com/overlayd/overlayd/perf/netns"
)

// Each call makes its own namespace, entered by Do, and removes it when
// the test ends.
func TestNewMakesAndRemovesANamespace(t *testing.T) {
	var names []string
	t.Run("make", func(t *testing.T) {
		a, b := New(t, "netnstest"), New(t, "netnstest")
		if a.Name == b.Name {
			t.Fatalf("two namespaces named %s", a.Name)
		}
		host, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		for _, ns := range []*netns.NS{a, b} {
			var inside string
			if err := ns.Do(func() (err error) {
				inside, err = os.Readlink("/proc/thread-self/ns/net")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if inside == host {
				t.Errorf("Do in %s ran in the host's namespace %s", ns.Name, host)
			}
			names = append(names, ns.Name)
		}
	})
	for _, name := range names {
		if _, err := os.Stat((&netns.NS{Name: name}).Path()); !os.IsNotExist(err) {
			t.Errorf("namespace %s still there after its test: %v", name, err)
		}
	}
}
