package netns

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// maxPid is the largest pid_max Linux allows: a larger "pid" is no pid.
const maxPid = 1 << 22

// ownerPid is the pid a name from Prefix carries (ovd-<tag>-<pid>-<seq>...):
// its first field of digits only, since Prefix gives none of the tag's
// fields that form, and a sequence number must follow it.
func ownerPid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "ovd-")
	if !ok {
		return 0, false
	}
	fields := strings.Split(rest, "-")
	for i := 1; i+1 < len(fields); i++ { // the tag comes first
		pid, err := strconv.Atoi(fields[i])
		if err != nil {
			continue
		}
		if _, err := strconv.Atoi(fields[i+1]); err != nil || pid <= 0 || pid > maxPid {
			return 0, false
		}
		return pid, true
	}
	return 0, false
}

// alive reports whether a process with pid exists (or may: any answer but
// "no such process" counts as alive).
func alive(pid int) bool {
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// inUse reports whether a process this one can see runs in the named
// namespace (as ip netns pids finds them), or whether that cannot be told.
func inUse(name string) bool {
	var ns syscall.Stat_t
	if err := syscall.Stat(filepath.Join(Dir, name), &ns); err != nil {
		return true
	}
	procs, err := filepath.Glob("/proc/[0-9]*/ns/net")
	if err != nil {
		return true
	}
	for _, p := range procs {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil && st.Ino == ns.Ino && st.Dev == ns.Dev {
			return true
		}
	}
	return false
}

// Stale lists the named namespaces that Prefix made for processes that no
// longer run, and in which no process runs: left by a lab, a bench or a
// test killed with SIGKILL, which could not clean up. Names it does not
// recognise are not listed.
func Stale() ([]string, error) {
	names, err := List("ovd")
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, name := range names {
		if pid, ok := ownerPid(name); ok && pid != os.Getpid() && !alive(pid) && !inUse(name) {
			stale = append(stale, name)
		}
	}
	return stale, nil
}

// Prune deletes the namespaces Stale lists and returns their names.
func Prune() ([]string, error) {
	stale, err := Stale()
	if err != nil {
		return nil, err
	}
	return deleteAll(stale)
}

func deleteAll(names []string) ([]string, error) {
	var deleted []string
	var errs []error
	for _, name := range names {
		if err := (&NS{Name: name}).Delete(); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, name)
	}
	return deleted, errors.Join(errs...)
}
