package ratelimit

import (
	"math"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// scannableHeap is the heap the GC must mark through (after a GC).
func scannableHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/scan/heap:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func fill(t *table, from, n int, now int64, tat int64) {
	for i := from; i < from+n; i++ {
		h := uint64(i)*0x9E3779B97F4A7C15 + 1
		t.update(h, now, func(int64, bool) (int64, bool) { return tat, true })
	}
}

// TestTableMillionKeys checks the stated bound: one million distinct keys
// take at most bytesPerKey each, a table never holds more than max_keys,
// and expired keys are swept and their memory returned.
func TestTableMillionKeys(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~50 MB")
	}
	const n = 1_000_000
	before, scanBefore := heapInUse(), scannableHeap()
	tb := newTable(n, tatExpired)
	now := int64(time.Hour)
	fill(tb, 0, n, now, now+int64(time.Minute))
	grown := heapInUse()
	// The maps hold no pointers: the GC does not mark through them, so its
	// work (and the pauses it makes) does not grow with the keys.
	scan := scannableHeap()
	t.Logf("scannable heap: %d bytes before, %d with the keys", scanBefore, scan)
	if scan > scanBefore+1<<20 {
		t.Errorf("scannable heap grew by %d bytes with %d keys, want under 1 MiB", scan-scanBefore, n)
	}
	per := float64(grown-before) / n
	t.Logf("%d keys: %.1f bytes per key (bound %d)", n, per, bytesPerKey)
	if per > bytesPerKey {
		t.Errorf("%.1f bytes per key, over the stated bound of %d", per, bytesPerKey)
	}
	// Shards fill unevenly: a few keys are evicted before the total
	// reaches max_keys.
	if got := tb.len(); got > n || got < n*99/100 {
		t.Fatalf("%d keys held, want at most %d and nearly all", got, n)
	}
	// A million more keys: the table stays at max_keys, evicting.
	fill(tb, n, n, now, now+int64(time.Minute))
	if got := tb.len(); got > n {
		t.Errorf("%d keys held after 2M inserts, bound %d", got, n)
	}
	if ev := tb.evictions.Load(); ev < n/2 {
		t.Errorf("%d evictions counted, want about %d", ev, n)
	}
	if full := heapInUse(); full-before > uint64(n*bytesPerKey) {
		t.Errorf("full table: %d bytes, over %d", full-before, n*bytesPerKey)
	}
	// Every lock hold of a sweep covers at most one shard.
	for i := range tb.shards {
		if l := len(tb.shards[i].m); l > tb.perShard {
			t.Fatalf("shard %d holds %d keys, bound %d", i, l, tb.perShard)
		}
	}
	tb.sweep(now + int64(2*time.Minute))
	if got := tb.len(); got != 0 {
		t.Errorf("%d keys after sweeping expired ones, want 0", got)
	}
	after := heapInUse()
	t.Logf("after sweep: %d bytes held (was %d)", after-min(after, before), grown-before)
	if after > before+uint64(n*bytesPerKey)/8 {
		t.Errorf("sweep kept %d bytes of emptied maps", after-before)
	}
	runtime.KeepAlive(tb)
}

func TestTableEvictsExpiredFirst(t *testing.T) {
	tb := newTable(2*shards, tatExpired) // two keys per shard
	now := int64(time.Hour)
	live, dead := uint64(shards*1), uint64(shards*2) // same shard (0)
	tb.update(live, now, func(int64, bool) (int64, bool) { return now + 1e9, true })
	tb.update(dead, now, func(int64, bool) (int64, bool) { return now + 1, true })
	later := now + 10
	tb.update(shards*3, later, func(int64, bool) (int64, bool) { return later + 1e9, true })
	s := tb.shard(0)
	if _, ok := s.m[dead]; ok {
		t.Error("expired key kept while a live one was evicted")
	}
	if _, ok := s.m[live]; !ok || len(s.m) != 2 {
		t.Errorf("live key evicted (%v) or shard holds %d keys, want 2", !ok, len(s.m))
	}
	if ev := tb.evictions.Load(); ev != 0 {
		t.Errorf("%d evictions of live keys counted, want 0", ev)
	}
}

// BenchmarkMillionKeys fills a table with a million keys per iteration and
// sweeps it shard by shard, reporting for one shard's lock hold the longest
// CPU time of the sweeping thread (the work the design bounds) and the
// longest wall time (which on a busy machine includes being descheduled),
// and the longest GC stop-the-world pause the runtime recorded meanwhile
// (upper bound of its histogram bucket; wall time, so on a busy machine
// it includes descheduling too).
//
//	go test -run x -bench MillionKeys -benchtime 3x ./proxy/middleware/ratelimit
func BenchmarkMillionKeys(b *testing.B) {
	b.Run("table", func(b *testing.B) {
		before := pauseCounts()
		var cpuMax, wallMax time.Duration
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for b.Loop() {
			tb := newTable(1_000_000, tatExpired)
			now := int64(time.Hour)
			fill(tb, 0, 1_000_000, now, now+int64(time.Minute))
			for i := range tb.shards {
				c0, w0 := threadCPU(), time.Now()
				tb.sweepShard(i, now+int64(2*time.Minute))
				cpuMax = max(cpuMax, threadCPU()-c0)
				wallMax = max(wallMax, time.Since(w0))
			}
		}
		b.ReportMetric(float64(cpuMax)/1e6, "max-sweep-cpu-ms")
		b.ReportMetric(float64(wallMax)/1e6, "max-sweep-wall-ms")
		b.ReportMetric(maxPauseSince(before)*1e3, "max-gc-pause-ms")
	})
}

// threadCPU is the calling thread's CPU time, in ns (getrusage counts in
// scheduler ticks, too coarse here).
func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

const gcPauses = "/sched/pauses/total/gc:seconds"

func pauseCounts() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: gcPauses}}
	metrics.Read(s)
	return s[0].Value.Float64Histogram()
}

// maxPauseSince is the upper bound of the highest bucket that gained a GC
// pause since before.
func maxPauseSince(before *metrics.Float64Histogram) float64 {
	now := pauseCounts()
	for i := len(now.Counts) - 1; i >= 0; i-- {
		if now.Counts[i] > before.Counts[i] {
			if math.IsInf(now.Buckets[i+1], 1) {
				return now.Buckets[i]
			}
			return now.Buckets[i+1]
		}
	}
	return 0
}
