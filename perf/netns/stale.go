package netns

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ownerPid is the pid a name from Prefix carries (ovd-<tag>-<pid>-<seq>...):
// the first of two numeric fields in a row after "ovd-".
func ownerPid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "ovd-")
	if !ok {
		return 0, false
	}
	fields := strings.Split(rest, "-")
	for i := 1; i+1 < len(fields); i++ { // the tag comes first
		pid, err := strconv.Atoi(fields[i])
		if err != nil || pid <= 0 {
			continue
		}
		if _, err := strconv.Atoi(fields[i+1]); err == nil {
			return pid, true
		}
	}
	return 0, false
}

// alive reports whether a process with pid exists (or may: any answer but
// "no such process" counts as alive).
func alive(pid int) bool {
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// Stale lists the named namespaces that Prefix made for processes that no
// longer run: left by a lab, a bench or a test killed with SIGKILL, which
// could not clean up. Names it does not recognise are not listed.
func Stale() ([]string, error) {
	names, err := List("ovd")
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, name := range names {
		if pid, ok := ownerPid(name); ok && pid != os.Getpid() && !alive(pid) {
			stale = append(stale, name)
		}
	}
	return stale, nil
}

// Prune deletes the namespaces Stale lists and returns their names. The
// processes still inside one are left alone: deleting its name kills
// nothing.
func Prune() ([]string, error) {
	stale, err := Stale()
	if err != nil {
		return nil, err
	}
	var pruned []string
	var errs []error
	for _, name := range stale {
		if err := (&NS{Name: name}).Delete(); err != nil {
			errs = append(errs, err)
			continue
		}
		pruned = append(pruned, name)
	}
	return pruned, errors.Join(errs...)
}
