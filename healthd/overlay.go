package healthd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/xlb-project/xlb/healthd/api"
)

// Overlay is the runtime part of the desired state: what the API changed
// relative to the configuration. It is computed as the difference between
// the state built from the configuration and the running state, and stored
// as state.json in the state directory.
type Overlay struct {
	Version        int              `json:"version"`
	AddVIPs        []api.VIPConfig  `json:"add_vips,omitempty"`
	RemoveVIPs     []api.VIPKey     `json:"remove_vips,omitempty"`
	AddBackends    []OverlayBackend `json:"add_backends,omitempty"`
	RemoveBackends []BackendRef     `json:"remove_backends,omitempty"`
	Weights        []OverlayWeight  `json:"weights,omitempty"`
	Drains         []OverlayDrain   `json:"drains,omitempty"`
}

// OverlayBackend is a backend added to a configured VIP.
type OverlayBackend struct {
	VIP     api.VIPKey        `json:"vip"`
	Backend api.BackendConfig `json:"backend"`
}

// BackendRef names a backend of a VIP.
type BackendRef struct {
	VIP     api.VIPKey `json:"vip"`
	Address netip.Addr `json:"address"`
}

// OverlayWeight is a changed weight of a configured backend.
type OverlayWeight struct {
	BackendRef
	Weight uint32 `json:"weight"`
}

// OverlayDrain is a draining backend.
type OverlayDrain struct {
	BackendRef
	Since   time.Time    `json:"since"`
	Timeout api.Duration `json:"timeout"`
}

const overlayVersion = 1

// OverlayFile is the overlay's file name in the state directory.
const OverlayFile = "state.json"

// Diff returns the overlay that turns base (from the configuration) into cur.
func Diff(base, cur *State) *Overlay {
	o := &Overlay{Version: overlayVersion}
	for _, v := range cur.SortedVIPs() {
		bv, inBase := base.VIPs[v.Key]
		if !inBase {
			c := v.config()
			for _, b := range v.Backends {
				c.Backends = append(c.Backends, b.config())
			}
			o.AddVIPs = append(o.AddVIPs, c)
			for _, b := range v.Backends {
				if b.Admin == api.Draining {
					o.Drains = append(o.Drains, drainOf(v.Key, b))
				}
			}
			continue
		}
		baseB := map[netip.Addr]*Backend{}
		for _, b := range bv.Backends {
			baseB[b.Addr] = b
		}
		for _, b := range v.Backends {
			old, ok := baseB[b.Addr]
			if !ok {
				o.AddBackends = append(o.AddBackends, OverlayBackend{VIP: v.Key, Backend: b.config()})
			} else if old.Weight != b.Weight {
				o.Weights = append(o.Weights, OverlayWeight{BackendRef{v.Key, b.Addr}, b.Weight})
			}
			if b.Admin == api.Draining {
				o.Drains = append(o.Drains, drainOf(v.Key, b))
			}
			delete(baseB, b.Addr)
		}
		for _, b := range bv.Backends {
			if _, gone := baseB[b.Addr]; gone {
				o.RemoveBackends = append(o.RemoveBackends, BackendRef{v.Key, b.Addr})
			}
		}
	}
	for _, v := range base.SortedVIPs() {
		if _, ok := cur.VIPs[v.Key]; !ok {
			o.RemoveVIPs = append(o.RemoveVIPs, v.Key)
		}
	}
	return o
}

func drainOf(k api.VIPKey, b *Backend) OverlayDrain {
	return OverlayDrain{BackendRef{k, b.Addr}, b.DrainStart, api.Duration(b.DrainTimeout)}
}

// Empty reports whether the overlay changes nothing.
func (o *Overlay) Empty() bool {
	return len(o.AddVIPs)+len(o.RemoveVIPs)+len(o.AddBackends)+len(o.RemoveBackends)+len(o.Weights)+len(o.Drains) == 0
}

// Apply applies the overlay onto a state built from the configuration. An
// entry that the configuration contradicts (a VIP it now defines itself, a
// backend or VIP it no longer has) is skipped; the skipped entries are
// returned with the reason, for logging.
func (o *Overlay) Apply(s *State) (dropped []string) {
	drop := func(format string, args ...any) { dropped = append(dropped, fmt.Sprintf(format, args...)) }
	for _, c := range o.AddVIPs {
		if err := s.AddVIP(c); err != nil {
			drop("add vip %s: %v", c.Address, err)
		}
	}
	for _, k := range o.RemoveVIPs {
		if err := s.RemoveVIP(k); err != nil {
			drop("remove vip %s: %v", k, err)
		}
	}
	for _, b := range o.AddBackends {
		if err := s.AddBackend(b.VIP, b.Backend); err != nil {
			drop("add backend %s to vip %s: %v", b.Backend.Address, b.VIP, err)
		}
	}
	for _, r := range o.RemoveBackends {
		if err := s.RemoveBackend(r.VIP, r.Address); err != nil {
			drop("remove backend %s of vip %s: %v", r.Address, r.VIP, err)
		}
	}
	for _, w := range o.Weights {
		if err := s.SetWeight(w.VIP, w.Address, w.Weight); err != nil {
			drop("weight of backend %s of vip %s: %v", w.Address, w.VIP, err)
		}
	}
	for _, d := range o.Drains {
		if err := s.Drain(d.VIP, d.Address, time.Duration(d.Timeout), d.Since); err != nil {
			drop("drain backend %s of vip %s: %v", d.Address, d.VIP, err)
		}
	}
	return dropped
}

// LoadOverlay reads the overlay from the state directory; a missing file is
// an empty overlay.
func LoadOverlay(dir string) (*Overlay, error) {
	b, err := os.ReadFile(filepath.Join(dir, OverlayFile))
	if errors.Is(err, os.ErrNotExist) {
		return &Overlay{Version: overlayVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read overlay: %w", err)
	}
	var o Overlay
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, fmt.Errorf("decode overlay %s: %w", filepath.Join(dir, OverlayFile), err)
	}
	if o.Version != overlayVersion {
		return nil, fmt.Errorf("overlay %s: version %d, this binary reads %d", filepath.Join(dir, OverlayFile), o.Version, overlayVersion)
	}
	return &o, nil
}

// Save writes the overlay atomically: a crash at any point leaves either the
// old or the new file, never a mix. It writes a temporary file, syncs it,
// renames it over the old one and syncs the directory.
func (o *Overlay) Save(dir string) error {
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return fmt.Errorf("encode overlay: %w", err)
	}
	return writeAtomic(dir, OverlayFile, append(b, '\n'))
}

func writeAtomic(dir, name string, data []byte) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state dir: %w", err)
	}
	return nil
}
