package healthd

import (
	"time"

	"github.com/xlb-project/xlb/loader"
)

// sample is a counter reading, for rates and idle drains.
type sample struct {
	at      time.Time
	c       loader.Counters
	moved   time.Time // last time the packet count changed
	pps     float64
	bps     float64
	current loader.Counters
}

// sampleLocked reads the counters of every written backend.
func (d *Daemon) sampleLocked(now time.Time) {
	for _, dv := range d.dp.vips {
		for _, db := range dv.backends {
			if !db.written {
				continue
			}
			c, err := d.opts.Datapath.BackendCounters(db.id)
			if err != nil {
				continue
			}
			s := db.sample
			if s == nil {
				db.sample = &sample{at: now, c: c, current: c, moved: now}
				continue
			}
			if dt := now.Sub(s.at).Seconds(); dt > 0 {
				s.pps = float64(c.Packets-s.c.Packets) / dt
				s.bps = float64(c.Bytes-s.c.Bytes) / dt
			}
			if c.Packets != s.c.Packets {
				s.moved = now
			}
			s.at, s.c, s.current = now, c, c
		}
	}
}

// vipCounters reads the counters of a VIP's written backends, by backend
// ID, and the VIP's total: those plus what its removed backends left (the
// datapath counts per backend only).
func (d *Daemon) vipCounters(dv *dpVIP) (loader.Counters, map[uint32]loader.Counters, error) {
	total, err := d.opts.Datapath.RetiredCounters(dv.id)
	if err != nil {
		return loader.Counters{}, nil, err
	}
	byID := make(map[uint32]loader.Counters, len(dv.backends))
	for _, db := range dv.backends {
		if !db.written {
			continue
		}
		c, err := d.opts.Datapath.BackendCounters(db.id)
		if err != nil {
			return loader.Counters{}, nil, err
		}
		byID[db.id] = c
		total.Packets += c.Packets
		total.Bytes += c.Bytes
	}
	return total, byID, nil
}
