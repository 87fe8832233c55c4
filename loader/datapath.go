package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// loadSpec returns the xdp_lb collection; tests may swap it for a variant.
var loadSpec = loadLb

// Datapath is a loaded xdp_lb program with its maps.
type Datapath struct {
	objs   lbObjects
	inner  map[uint32]*ebpf.MapSpec // table size → inner map template
	tables map[uint32]*ebpf.Map     // table size → outer array of maps
	pool   *tablePool               // inner table maps to reuse
	views  tableViews               // installed tables mapped for PatchTable
	pinDir string
	prog   *Program
	// maxBackends is Options.MaxBackends: backend IDs are below it.
	maxBackends uint32

	// settingsMu orders the writes of the settings map: SetConfig keeps
	// the generation that bumpGen raises.
	settingsMu sync.Mutex
	settings   lbConfig // the settings map's value, once read (settingsOK)
	settingsOK bool
	// written has a bit per backend ID this Datapath wrote and did not
	// clear: PutBackend need not read those first (to reset the counters
	// of a new one).
	written []atomic.Uint64

	mu     sync.Mutex           // guards links and closed
	links  map[string]link.Link // ifname → link
	closed bool
}

func (o Options) validate() error {
	if o.PinDir != "" && !filepath.IsAbs(o.PinDir) {
		return fmt.Errorf("%w: pin dir %q: must be an absolute path", ErrInvalid, o.PinDir)
	}
	if o.MaxBackends != 0 && (o.MaxBackends < MinMaxBackends || o.MaxBackends > MaxMaxBackends) {
		return fmt.Errorf("%w: max backends %d: want %d..%d", ErrInvalid, o.MaxBackends, MinMaxBackends, MaxMaxBackends)
	}
	return nil
}

// Load loads xdp_lb and creates its maps, or adopts the maps pinned under
// opts.PinDir by an earlier Load (keeping flows, VIPs, backends, tables,
// configuration and counters).
func Load(opts Options) (*Datapath, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.FlowTableSize == 0 {
		opts.FlowTableSize = DefaultFlowTableSize
	}
	if opts.MaxBackends == 0 {
		opts.MaxBackends = MaxBackends
	}
	spec, err := loadSpec()
	if err != nil {
		return nil, fmt.Errorf("load xdp_lb spec: %w", err)
	}
	spec.Maps[lbMapFlows].MaxEntries = opts.FlowTableSize
	spec.Maps[lbMapBackends].MaxEntries = opts.MaxBackends
	spec.Maps[lbMapBackendStats].MaxEntries = opts.MaxBackends
	if opts.PerCPULRU {
		spec.Maps[lbMapFlows].Flags |= unix.BPF_F_NO_COMMON_LRU
	}
	colOpts := &ebpf.CollectionOptions{}
	if opts.PinDir != "" {
		if err := ensureBpffs(opts.PinDir); err != nil {
			return nil, err
		}
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinByName
		}
		colOpts.Maps.PinPath = opts.PinDir
		if err := dropStaleCache(opts.PinDir, spec.Maps[lbMapFlowCache]); err != nil {
			return nil, err
		}
	}
	earlier, err := takeEarlierTables(opts.PinDir)
	if err != nil {
		return nil, err
	}
	d := &Datapath{
		inner:  map[uint32]*ebpf.MapSpec{},
		tables: map[uint32]*ebpf.Map{},
		pool:   newTablePool(),
		pinDir: opts.PinDir,
		links:  map[string]link.Link{},

		maxBackends: opts.MaxBackends,
		written:     make([]atomic.Uint64, (opts.MaxBackends+63)/64),
	}
	for _, size := range SupportedTableSizes {
		spec.Maps[fmt.Sprintf("tables_%d", size)].InnerMap.Flags |= tableMapFlags
	}
	if err := spec.LoadAndAssign(&d.objs, colOpts); err != nil {
		return nil, loadError("xdp_lb", err, opts.Verbose)
	}
	d.prog = &Program{prog: d.objs.XdpLb}
	if err := unpinObsolete(opts.PinDir); err != nil {
		d.Close()
		return nil, err
	}
	for _, size := range SupportedTableSizes {
		name := fmt.Sprintf("tables_%d", size)
		d.inner[size] = spec.Maps[name].InnerMap.Copy()
	}
	d.tables[251] = d.objs.Tables251
	d.tables[4093] = d.objs.Tables4093
	d.tables[65537] = d.objs.Tables65537
	for vipID, table := range earlier {
		if err := d.SetTable(vipID, table); err != nil {
			d.Close()
			return nil, fmt.Errorf("install table of vip %d from an earlier build's pins: %w", vipID, err)
		}
	}
	if err := d.initConfig(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// obsoletePins are maps that earlier builds pinned and this one no longer
// has: vip_stats, per-VIP counters that xdp_lb wrote for every packet
// (replaced by vip_retired and the backends' counters).
var obsoletePins = []string{"vip_stats"}

// unpinObsolete removes the obsoletePins under pinDir, so that an upgrade
// leaves nothing behind.
func unpinObsolete(pinDir string) error {
	if pinDir == "" {
		return nil
	}
	for _, name := range obsoletePins {
		if err := os.Remove(filepath.Join(pinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unpin obsolete %s: %w", name, err)
		}
	}
	return nil
}

// dropStaleCache unpins a pinned flow cache of another shape than spec
// (one an older build made), so that Load creates a new one instead of
// refusing the pins: the cache only holds copies of flow table entries.
// The program still running keeps its own reference until it is replaced.
func dropStaleCache(pinDir string, spec *ebpf.MapSpec) error {
	path := filepath.Join(pinDir, spec.Name)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pinned %s: %w", spec.Name, err)
	}
	same := m.Type() == spec.Type && m.KeySize() == spec.KeySize && m.ValueSize() == spec.ValueSize &&
		m.MaxEntries() == spec.MaxEntries && m.Flags() == spec.Flags
	m.Close()
	if same {
		return nil
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("unpin stale %s: %w", spec.Name, err)
	}
	return nil
}

// loadError names the object that failed and adds the verifier log when
// asked.
func loadError(what string, err error, verbose bool) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		if verbose {
			return fmt.Errorf("load %s: %w: %+v", what, ErrVerifier, ve)
		}
		return fmt.Errorf("load %s: %w: %v (run with verbose for the full log)", what, ErrVerifier, ve)
	}
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("load %s: %w (another flow table size, LRU kind or max backends than the pins were made with; remove the pins with xlb daemon --cleanup, which loses the flows): %w", what, ErrIncompatiblePin, err)
	}
	return fmt.Errorf("load %s: %w", what, err)
}

// MaxBackends is the number of backend IDs this datapath holds
// (Options.MaxBackends): IDs 1..MaxBackends()-1 are usable.
func (d *Datapath) MaxBackends() uint32 { return d.maxBackends }

// Program is the xdp_lb program, for running packets through it.
func (d *Datapath) Program() *Program { return d.prog }

// Close releases the file descriptors. Pinned maps and links stay, and so
// does a pinned attachment; without a PinDir the program is detached. A
// second Close does nothing. The map methods of a Datapath are safe for
// concurrent use; none may be called after Close.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	for name, l := range d.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link on %s: %w", name, err))
		}
		delete(d.links, name)
	}
	if err := d.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close xdp_lb objects: %w", err))
	}
	d.views.close()
	d.pool.close()
	return errors.Join(errs...)
}

// ensureBpffs makes dir a directory on a bpf filesystem. When no bpffs is
// there, one is mounted: at /sys/fs/bpf for a dir below it, else at dir.
func ensureBpffs(dir string) error {
	mountAt := dir
	if strings.HasPrefix(dir, "/sys/fs/bpf/") || dir == "/sys/fs/bpf" {
		mountAt = "/sys/fs/bpf"
	}
	if err := os.MkdirAll(mountAt, 0o700); err != nil {
		return fmt.Errorf("create bpffs mount point %s: %w", mountAt, err)
	}
	if !isBpffs(mountAt) {
		if err := unix.Mount("bpffs", mountAt, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", mountAt, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir %s: %w", dir, err)
	}
	return nil
}

func isBpffs(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == unix.BPF_FS_MAGIC
}

// Cleanup removes the pins Load and Attach made under pinDir (maps and
// links; a pinned link that no process holds detaches its program) and the
// directory when nothing else is left in it. A bpffs that Load mounted at
// pinDir itself is unmounted. A missing pinDir is no error.
func Cleanup(pinDir string) error {
	if pinDir == "" || !filepath.IsAbs(pinDir) || filepath.Clean(pinDir) == "/sys/fs/bpf" {
		return fmt.Errorf("%w: pin dir %q: want an absolute path below a bpffs mount", ErrInvalid, pinDir)
	}
	entries, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clean up %s: %w", pinDir, err)
	}
	if !isBpffs(pinDir) {
		return fmt.Errorf("%w: clean up %s: not on a bpf filesystem", ErrInvalid, pinDir)
	}
	spec, err := loadLb()
	if err != nil {
		return fmt.Errorf("clean up %s: %w", pinDir, err)
	}
	var errs []error
	for _, e := range entries {
		_, ours := spec.Maps[e.Name()]
		if !ours && !strings.HasPrefix(e.Name(), "link_") {
			continue
		}
		if err := os.Remove(filepath.Join(pinDir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", e.Name(), err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if !isBpffs(filepath.Dir(pinDir)) {
		if err := unix.Unmount(pinDir, 0); err != nil {
			return fmt.Errorf("unmount bpffs at %s: %w", pinDir, err)
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return fmt.Errorf("remove %s: %w", pinDir, err)
	}
	return nil
}
