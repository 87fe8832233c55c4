package loader

import "errors"

var errTODO = errors.New("not implemented yet")

// Datapath is a loaded xdp_lb program with its maps.
type Datapath struct{}

// Load loads the program and creates or adopts the maps.
func Load(opts Options) (*Datapath, error) { return nil, errTODO }

// Attach attaches xdp_lb to ifname in native mode (generic only when asked).
func (d *Datapath) Attach(ifname string, generic bool) error { return errTODO }

// Detach detaches from every interface and removes the pinned links.
func (d *Datapath) Detach() error { return errTODO }

// Close releases file descriptors and keeps the pins.
func (d *Datapath) Close() error { return errTODO }

// Cleanup removes everything pinned under pinDir, detaching pinned links.
func Cleanup(pinDir string) error { return errTODO }

// PutVIP creates or replaces a VIP.
func (d *Datapath) PutVIP(k VIPKey, v VIP) error { return errTODO }

// RemoveVIP removes a VIP.
func (d *Datapath) RemoveVIP(k VIPKey) error { return errTODO }

// PutBackend creates or replaces a backend.
func (d *Datapath) PutBackend(id uint32, b Backend) error { return errTODO }

// RemoveBackend removes a backend.
func (d *Datapath) RemoveBackend(id uint32) error { return errTODO }

// SetTable installs a VIP's Maglev table atomically.
func (d *Datapath) SetTable(vipID uint32, table []uint32) error { return errTODO }

// SetConfig sets the datapath-wide configuration.
func (d *Datapath) SetConfig(c Config) error { return errTODO }

// VIPCounters reads a VIP's counters.
func (d *Datapath) VIPCounters(id uint32) (Counters, error) { return Counters{}, errTODO }

// BackendCounters reads a backend's counters.
func (d *Datapath) BackendCounters(id uint32) (Counters, error) { return Counters{}, errTODO }

// Drops reads the counter of every non-forwarding exit, by reason.
func (d *Datapath) Drops() (map[string]uint64, error) { return nil, errTODO }

// AttachDecap loads xdp_decap and attaches it to ifname with a netlink XDP
// attachment, which outlives the calling process.
func AttachDecap(ifname string, generic bool) error { return errTODO }

// DetachDecap removes the XDP program from ifname.
func DetachDecap(ifname string) error { return errTODO }
