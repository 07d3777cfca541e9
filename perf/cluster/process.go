package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/overlayd/overlayd/perf/netns"
)

// Process is a program this package started inside a namespace. It is
// stopped by its own pid only: nothing else is ever signalled.
type Process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	exited  atomic.Bool
	err     error
}

// StartProcess runs argv inside ns with stdout and stderr appended to logPath.
func StartProcess(ctx context.Context, ns *netns.NS, logPath string, argv ...string) (*Process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// Not tied to ctx: a process outlives the call that started it and is
	// stopped by Stop, with SIGTERM first so it can clean up.
	return start(ns.Command(context.WithoutCancel(ctx), argv[0], argv[1:]...), log, logPath)
}

// StartCommand runs argv as it is, in this program's namespaces, with
// stdout and stderr appended to logPath: for a program that must keep the
// host's mount namespace, entered into a host's network namespace with
// nsenter --net (dockerd: `ip netns exec` remounts /sys, hiding the
// cgroups). nsenter execs the program, so Pid is the program's.
func StartCommand(logPath string, argv ...string) (*Process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return start(exec.Command(argv[0], argv[1:]...), log, logPath)
}

func start(cmd *exec.Cmd, log *os.File, logPath string) (*Process, error) {
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := startFromSpawner(cmd); err != nil {
		log.Close()
		return nil, err
	}
	p := &Process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		p.exited.Store(true)
		close(p.done)
	}()
	return p, nil
}

// spawnRequests feed the spawner thread.
var (
	spawnOnce     sync.Once
	spawnRequests chan spawnRequest
)

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

// startFromSpawner starts cmd from one OS thread that lives as long as this
// program. Pdeathsig fires when the thread that forked the child exits, not
// the process; Go ends any thread whose goroutine exits while locked to it
// (as netns.Do does), so forking from an arbitrary thread would kill the
// child at a random moment. A crash of this program still kills it.
func startFromSpawner(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnRequests = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread stays for good
			for req := range spawnRequests {
				req.done <- req.cmd.Start()
			}
		}()
	})
	req := spawnRequest{cmd: cmd, done: make(chan error, 1)}
	spawnRequests <- req
	return <-req.done
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool { return p.exited.Load() }

// Done is closed when the process ends.
func (p *Process) Done() <-chan struct{} { return p.done }

// Stop sends SIGTERM, waits up to 10 s, then SIGKILLs. A process that exits
// on SIGTERM is a clean stop, whatever its exit status says of the signal.
func (p *Process) Stop() error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pid %d: %w", p.Pid(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("pid %d did not stop on SIGTERM within 10s; killed", p.Pid())
	}
}

// Tail returns the last n bytes of the process's log.
func (p *Process) Tail(n int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, 0)
	}
	b := make([]byte, n)
	m, _ := f.Read(b)
	return string(b[:m])
}
