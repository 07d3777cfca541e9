package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
)

// tables is the part of go-iptables IPTables uses; tests hand in a fake.
type tables interface {
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	List(table, chain string) ([]string, error)
	Insert(table, chain string, pos int, rulespec ...string) error
	Exists(table, chain string, rulespec ...string) (bool, error)
	DeleteById(table, chain string, id int) error
	DeleteIfExists(table, chain string, rulespec ...string) error
	ClearAndDeleteChain(table, chain string) error
	// Save is `iptables-save -t table`: one command for the whole table.
	Save(table string) ([]string, error)
}

// goIPTables is go-iptables with the save command beside it.
type goIPTables struct {
	*iptables.IPTables
	save string
}

func (g goIPTables) Save(table string) ([]string, error) {
	out, err := exec.Command(g.save, "-t", table).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -t %s: %w", g.save, table, err)
	}
	return strings.Split(string(out), "\n"), nil
}

// IPTables keeps overlayd's rules in place with one iptables back end.
// Its methods may be called from several goroutines.
type IPTables struct {
	opts    Options
	backend Backend

	mu  sync.Mutex
	ipt tables
}

// NewIPTables uses the back end the host uses (Detect). It checks only
// that the command runs; the kernel is asked at the first Ensure.
func NewIPTables(opts Options) (*IPTables, error) {
	b, err := Detect()
	if err != nil {
		return nil, err
	}
	return NewIPTablesWith(b, opts)
}

// NewIPTablesWith uses the back end given. RandomFully is set from what
// the command supports.
func NewIPTablesWith(b Backend, opts Options) (*IPTables, error) {
	ipt, err := iptables.New(iptables.Path(b.Path))
	if err != nil {
		return nil, fmt.Errorf("iptables (%s): %w", b.Path, err)
	}
	opts.RandomFully = ipt.HasRandomFully()
	return &IPTables{opts: opts, backend: b, ipt: goIPTables{ipt, b.Path + "-save"}}, nil
}

// Backend is the back end in use.
func (t *IPTables) Backend() Backend { return t.backend }

// Masquerades reports whether the rules masquerade (FLANNEL_IPMASQ).
func (t *IPTables) Masquerades() bool { return t.opts.Masquerade }

// Ensure makes overlayd's chains hold the rules of network and subnet, and
// the built-in chains jump to them, changing only what differs: a rule
// still wanted is never removed, and a new one goes in before an old one
// goes out, so traffic never meets a moment without them (an overlayd
// restart, a new lease). Chains of options turned off are removed. It
// returns how many rules it added or removed: 0 when all was in place.
func (t *IPTables) Ensure(network, subnet netip.Prefix, ingress string) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	want := Rules(network, subnet, ingress, t.opts)
	if t.inPlace(want) {
		return 0, nil
	}
	changed := 0
	var errs []error
	for _, owned := range Owned() {
		i := slices.IndexFunc(want, func(c Chain) bool { return c.Name == owned.Name })
		var (
			n   int
			err error
		)
		if i < 0 {
			n, err = t.remove(owned)
		} else {
			n, err = t.ensure(want[i])
		}
		changed += n
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", owned.Table, owned.Name, err))
		}
	}
	return changed, errors.Join(errs...)
}

// inPlace reports whether the chains and jumps are already as wanted,
// from one iptables-save per table: the check every --iptables-resync
// makes, where asking chain by chain took ten commands (about 80 ms of
// CPU on a small VM, more than overlayd spends idle). Anything else,
// an error included, leaves it to the chain-by-chain path.
func (t *IPTables) inPlace(want []Chain) bool {
	saved := map[string]savedTable{}
	for _, owned := range Owned() {
		st, ok := saved[owned.Table]
		if !ok {
			lines, err := t.ipt.Save(owned.Table)
			if err != nil {
				return false
			}
			if st, err = parseSave(lines); err != nil {
				return false
			}
			saved[owned.Table] = st
		}
		i := slices.IndexFunc(want, func(c Chain) bool { return c.Name == owned.Name })
		if i < 0 {
			if _, exists := st[owned.Name]; exists {
				return false
			}
			continue
		}
		c := want[i]
		have, exists := st[c.Name]
		if !exists || !slices.EqualFunc(have, c.Rules, slices.Equal) ||
			!slices.ContainsFunc(st[c.From], func(r []string) bool { return slices.Equal(r, c.Jump) }) {
			return false
		}
	}
	return true
}

// savedTable is a table as iptables-save prints it: each chain's rules,
// each word unquoted (splitQuoted); a chain without rules is present, empty.
type savedTable map[string][][]string

func parseSave(lines []string) (savedTable, error) {
	st := savedTable{}
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, ":"):
			name, _, _ := strings.Cut(l[1:], " ")
			if _, ok := st[name]; !ok {
				st[name] = nil
			}
		case strings.HasPrefix(l, "-A "):
			tok, err := splitQuoted(l)
			if err != nil {
				return nil, fmt.Errorf("rule %q: %w", l, err)
			}
			if len(tok) >= 2 {
				st[tok[1]] = append(st[tok[1]], tok[2:])
			}
		}
	}
	return st, nil
}

// Remove deletes overlayd's jumps and chains (--release-on-exit).
func (t *IPTables) Remove() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, c := range Owned() {
		if _, err := t.remove(c); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", c.Table, c.Name, err))
		}
	}
	return errors.Join(errs...)
}

// ensure fills the chain first, then adds the jump, so a new chain is
// never entered half-filled.
func (t *IPTables) ensure(c Chain) (int, error) {
	if err := t.ensureChain(c.Table, c.Name); err != nil {
		return 0, err
	}
	have, err := t.rules(c.Table, c.Name)
	if err != nil {
		return 0, err
	}
	changed, err := t.reconcile(c, have)
	if err != nil {
		return changed, err
	}
	if c.FromHost {
		if err := t.ensureChain(c.Table, c.From); err != nil {
			return changed, err
		}
	}
	ok, err := t.ipt.Exists(c.Table, c.From, c.Jump...)
	if err != nil || ok {
		return changed, err
	}
	pos := 1
	if !c.First {
		from, err := t.rules(c.Table, c.From)
		if err != nil {
			return changed, err
		}
		// Before the first bare RETURN: a jump after it would never be
		// reached (rules an operator appended after Docker's are not).
		pos = len(from) + 1
		if i := slices.IndexFunc(from, func(r []string) bool { return slices.Equal(r, []string{"-j", "RETURN"}) }); i >= 0 {
			pos = i + 1
		}
	}
	if err := t.ipt.Insert(c.Table, c.From, pos, c.Jump...); err != nil {
		return changed, err
	}
	return changed + 1, nil
}

// ensureChain creates the chain unless it exists. Another program
// creating it meanwhile (Docker, DOCKER-USER) is no failure.
func (t *IPTables) ensureChain(table, chain string) error {
	exists, err := t.ipt.ChainExists(table, chain)
	if err != nil || exists {
		return err
	}
	if err := t.ipt.NewChain(table, chain); err != nil {
		if exists, _ := t.ipt.ChainExists(table, chain); exists {
			return nil
		}
		return err
	}
	return nil
}

// reconcile turns have into c.Rules in place: at each position a rule
// that differs gets the wanted one inserted before it, and what is left
// past the wanted rules is deleted from the end. The rules iptables
// numbers from 1.
func (t *IPTables) reconcile(c Chain, have [][]string) (int, error) {
	changed := 0
	for i, r := range c.Rules {
		if i < len(have) && slices.Equal(have[i], r) {
			continue
		}
		if err := t.ipt.Insert(c.Table, c.Name, i+1, r...); err != nil {
			return changed, err
		}
		have = slices.Insert(have, i, r)
		changed++
	}
	for n := len(have); n > len(c.Rules); n-- {
		if err := t.ipt.DeleteById(c.Table, c.Name, n); err != nil {
			return changed, err
		}
		changed++
	}
	return changed, nil
}

// remove deletes the jump to c and c itself, where they exist.
func (t *IPTables) remove(c Chain) (int, error) {
	exists, err := t.ipt.ChainExists(c.Table, c.Name)
	if err != nil || !exists {
		return 0, err
	}
	// A chain of the host's may be gone (Docker's, flushed by hand); it
	// stays where it is.
	fromExists := true
	if c.FromHost {
		if fromExists, err = t.ipt.ChainExists(c.Table, c.From); err != nil {
			return 0, err
		}
	}
	if fromExists {
		if err := t.ipt.DeleteIfExists(c.Table, c.From, c.Jump...); err != nil {
			return 0, err
		}
	}
	if err := t.ipt.ClearAndDeleteChain(c.Table, c.Name); err != nil {
		return 1, err
	}
	return 1, nil
}

// rules returns the rules of one chain, as `iptables -S chain` lists them.
func (t *IPTables) rules(table, chain string) ([][]string, error) {
	lines, err := t.ipt.List(table, chain)
	if err != nil {
		return nil, err
	}
	st, err := parseSave(lines) // -S prints the -A lines as iptables-save does
	return st[chain], err
}

// splitQuoted splits a line as iptables -S quotes it: words separated by
// spaces, a word in double quotes may hold spaces, \" and \\ escaped.
func splitQuoted(s string) ([]string, error) {
	var (
		out     []string
		cur     strings.Builder
		inWord  bool
		inQuote bool
	)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case inQuote && ch == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case ch == '"':
			inQuote, inWord = !inQuote, true
		case !inQuote && (ch == ' ' || ch == '\t'):
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(ch)
			inWord = true
		}
	}
	if inQuote {
		return nil, errors.New("unterminated quote")
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}
