package tunnel

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/overlayd/overlayd/tunnel/busypoll"
	"github.com/overlayd/overlayd/tunnel/tun"
	"github.com/overlayd/overlayd/tunnel/underlay"
)

// pollingTUN and pollingConn are a TUN queue and an underlay socket that
// report fixed busy-poll counts; nothing else of them is used.
type pollingTUN struct {
	tun.Device
	st busypoll.Stats
}

func (d pollingTUN) BusyPollStats() busypoll.Stats { return d.st }

type pollingConn struct {
	underlay.Conn
	st busypoll.Stats
}

func (c pollingConn) BusyPollStats() busypoll.Stats { return c.st }

// Status gives each reader's busy-poll counts, in worker order, and their
// sums; a reader that does not poll (one that is not a Reporter) is left
// out of both.
func TestBusyPollStatusPerReader(t *testing.T) {
	workers := []*worker{
		{id: 0, tun: pollingTUN{st: busypoll.Stats{Caught: 70, Slept: 20}}, conn: pollingConn{st: busypoll.Stats{Caught: 65, Slept: 25}}},
		{id: 1, tun: pollingTUN{st: busypoll.Stats{Caught: 3, Slept: 900}}, conn: pollingConn{st: busypoll.Stats{}}},
		{id: 2, tun: pollingTUN{st: busypoll.Stats{Caught: 1, Slept: 2}}, conn: struct{ underlay.Conn }{}},
	}
	got := busyPollStatus(50*time.Microsecond, workers)
	want := &BusyPollStatus{
		Max: "50µs", Caught: 139, Slept: 947,
		Readers: []BusyPollReader{
			{Worker: 0, Reads: "tun", Caught: 70, Slept: 20},
			{Worker: 0, Reads: "underlay", Caught: 65, Slept: 25},
			{Worker: 1, Reads: "tun", Caught: 3, Slept: 900},
			{Worker: 1, Reads: "underlay"},
			{Worker: 2, Reads: "tun", Caught: 1, Slept: 2},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("busyPollStatus:\n got %+v\nwant %+v", got, want)
	}
}

// A control socket path that names a file of another kind is said to be
// no socket, not that overlayd may not run.
func TestNotRunningHint(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-socket")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if hint := notRunningHint(file); !strings.Contains(hint, "not a socket") {
		t.Errorf("hint for a regular file: %q", hint)
	}
	if hint := notRunningHint(filepath.Join(t.TempDir(), "nosuch.sock")); !strings.Contains(hint, "is overlayd running?") {
		t.Errorf("hint for a missing socket: %q", hint)
	}
}

// Nothing on the socket: the error says what connecting said, without the
// HTTP client's wrapping around it, and what to check.
func TestQueryStatusNoDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nosuch.sock")
	_, err := QueryStatus(context.Background(), sock)
	if err == nil {
		t.Fatal("a status from no daemon")
	}
	msg := err.Error()
	want := "control socket " + sock + ": connect: no such file or directory: is overlayd running?"
	if !strings.HasPrefix(msg, want) || strings.Contains(msg, "http://") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%q\nwant it to start %q, with no URL, and to be ErrNotExist", msg, want)
	}
}
