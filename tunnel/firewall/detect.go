package firewall

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// The iptables back ends Debian ships: both take the same commands, but
// write into different kernel tables, and a packet must pass both. Rules
// of overlayd's in one and Docker's FORWARD DROP in the other would still
// drop it: overlayd has to use the back end the host uses.
const (
	BackendNFT    = "nft"
	BackendLegacy = "legacy"
)

// ErrNoIPTables is returned when no iptables command is installed.
var ErrNoIPTables = errors.New("no iptables command found (looked for iptables, iptables-nft, iptables-legacy in PATH): " +
	"install the iptables package (Debian: apt-get install iptables)")

// Backend is the iptables command overlayd uses.
type Backend struct {
	Name string // BackendNFT or BackendLegacy
	Path string // the command, e.g. /usr/sbin/iptables-nft
	Why  string // how it was chosen, for the log
}

// lookPath and countRules are replaced by tests.
var (
	lookPath   = exec.LookPath
	countRules = countSavedRules
)

// Detect picks the back end the host uses, as the iptables wrappers of
// flannel's and Kubernetes' images do: the one that already holds more
// rules; on a tie (typically none at all, before Docker started) the one
// the `iptables` command is (update-alternatives' choice, which Docker
// will use too). A host with only one of them uses that one.
func Detect() (Backend, error) {
	nft, nftErr := lookPath("iptables-nft")
	legacy, legacyErr := lookPath("iptables-legacy")
	plain, plainErr := lookPath("iptables")
	switch {
	case nftErr != nil && legacyErr != nil && plainErr != nil:
		return Backend{}, ErrNoIPTables
	case nftErr != nil && legacyErr != nil:
		// An iptables older than 1.8 has no -nft/-legacy variants.
		return Backend{Name: backendOf(plain), Path: plain, Why: "the only iptables installed"}, nil
	case nftErr != nil:
		return Backend{Name: BackendLegacy, Path: legacy, Why: "iptables-nft is not installed"}, nil
	case legacyErr != nil:
		return Backend{Name: BackendNFT, Path: nft, Why: "iptables-legacy is not installed"}, nil
	}
	nNFT, errN := countRules(nft + "-save")
	nLegacy, errL := countRules(legacy + "-save")
	why := fmt.Sprintf("rules in place: %d nft, %d legacy", nNFT, nLegacy)
	switch {
	case errN == nil && errL == nil && nLegacy > nNFT:
		return Backend{Name: BackendLegacy, Path: legacy, Why: why}, nil
	case errN == nil && errL == nil && nNFT > nLegacy:
		return Backend{Name: BackendNFT, Path: nft, Why: why}, nil
	case errN != nil || errL != nil:
		why = fmt.Sprintf("rules not countable (%v)", errors.Join(errN, errL))
	}
	if plainErr == nil && backendOf(plain) == BackendLegacy {
		return Backend{Name: BackendLegacy, Path: legacy, Why: why + "; iptables is iptables-legacy"}, nil
	}
	return Backend{Name: BackendNFT, Path: nft, Why: why + "; iptables is iptables-nft"}, nil
}

// backendOf tells which back end an iptables command is, from what it
// links to: xtables-nft-multi or xtables-legacy-multi (before 1.8, the
// only one: legacy).
func backendOf(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	if strings.Contains(filepath.Base(path), "nft") {
		return BackendNFT
	}
	return BackendLegacy
}

// countSavedRules counts the rules iptables-save prints. Saving reads
// only: it creates no table and loads no module.
func countSavedRules(save string) (int, error) {
	out, err := exec.Command(save).Output()
	if err != nil {
		return 0, fmt.Errorf("%s: %w", save, err)
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "-A ") {
			n++
		}
	}
	return n, nil
}
