package search

import (
	"container/heap"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/hubmesh/hubmesh"
)

// Doc is what the index holds of one repository.
type Doc struct {
	// Name is the full repository name ("acme/api").
	Name        string
	Description string
	Private     bool
	Official    bool
	Automated   bool
	Stars       int64
	Pulls       int64
}

// FromRepository is the Doc of a repository record.
func FromRepository(r hubmesh.Repository) Doc {
	return Doc{
		Name: r.Name, Description: r.Description, Private: r.IsPrivate,
		Official: r.IsOfficial, Automated: r.IsAutomated, Stars: r.StarCount, Pulls: r.PullCount,
	}
}

// Query is one search.
type Query struct {
	// Text is what the user typed; empty matches every repository.
	Text string
	// Namespace, when set, keeps only the repositories of that namespace.
	Namespace string
	// Official and Automated, when set, keep only repositories whose flag
	// has that value.
	Official  *bool
	Automated *bool
	// MinStars keeps repositories with at least that many stars.
	MinStars int64
	// Page (1-based) and PageSize select the page of results; zero means
	// the first page of DefaultPageSize. PageSize is capped at MaxPageSize.
	Page     int
	PageSize int
	// SeeAll shows every private repository (a site administrator).
	// Otherwise CanSee, when set, is asked about each private candidate
	// (with the index read-locked: it must not block for long); without
	// it private repositories are hidden.
	SeeAll bool
	CanSee func(name string) bool
}

// Page sizes.
const (
	DefaultPageSize = 25
	MaxPageSize     = 100
)

// Hit is one repository found.
type Hit struct {
	Name        string
	Namespace   string
	Description string
	Private     bool
	Official    bool
	Automated   bool
	Stars       int64
	Pulls       int64
}

// Result is one page of results.
type Result struct {
	// Total is the number of repositories matching, over every page.
	Total    int
	Page     int
	PageSize int
	Hits     []Hit
}

// Pages is the number of pages of Total results.
func (r Result) Pages() int {
	if r.PageSize <= 0 {
		return 0
	}
	return (r.Total + r.PageSize - 1) / r.PageSize
}

// Limits on what one document and one query contribute.
const (
	maxDescTokens  = 64
	maxQueryTokens = 16
	maxQueryLen    = 256
)

// Index is an inverted index over repository names and descriptions. It
// is safe for concurrent use: queries share a read lock, updates take the
// write lock briefly (a full rebuild is built aside and swapped in).
type Index struct {
	mu sync.RWMutex
	st *state
}

// state is everything behind the lock.
type state struct {
	docs   []doc
	meta   []meta // by doc id, compact: what filtering and ranking read
	free   []int32
	byName map[string]int32
	names  dict        // tokens of names (namespace and path components)
	descs  dict        // tokens of descriptions
	fulls  prefixIndex // whole names, and names without their namespace
	nsIDs  map[string]uint32
	live   int
}

type doc struct {
	Doc
	ns, short string // namespace, and the name after it
	nameToks  []uint32
	descToks  []uint32
}

// meta flags.
const (
	flagAlive uint8 = 1 << iota
	flagPrivate
	flagOfficial
	flagAutomated
)

type meta struct {
	flags uint8
	ns    uint32
	stars int32 // clamped
	boost float32
}

func metaOf(d Doc, ns uint32) meta {
	m := meta{flags: flagAlive, ns: ns, stars: int32(min(max(d.Stars, 0), math.MaxInt32)), boost: boost(d)}
	if d.Private {
		m.flags |= flagPrivate
	}
	if d.Official {
		m.flags |= flagOfficial
	}
	if d.Automated {
		m.flags |= flagAutomated
	}
	return m
}

// dict maps tokens to sorted posting lists of doc ids.
type dict struct {
	ids     map[string]uint32
	terms   []string
	post    [][]int32
	sorted  []uint32 // term ids in term order, for prefix ranges
	pending []uint32 // term ids added since sorted was built
}

func newDict() dict { return dict{ids: map[string]uint32{}} }

// New returns an empty index.
func New() *Index { return &Index{st: newState()} }

func newState() *state {
	return &state{byName: map[string]int32{}, names: newDict(), descs: newDict(), nsIDs: map[string]uint32{}}
}

// Len is the number of repositories indexed.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.st.live
}

// Replace rebuilds the index from docs. The new index is built without
// the lock; queries see the old one until it is swapped in.
func (ix *Index) Replace(docs []Doc) {
	st := newState()
	st.docs = make([]doc, 0, len(docs))
	for _, d := range docs {
		if _, dup := st.byName[d.Name]; dup {
			continue
		}
		st.fill(st.newSlot(), d, false)
	}
	st.names.finish()
	st.descs.finish()
	st.fulls.merge()
	ix.mu.Lock()
	ix.st = st
	ix.mu.Unlock()
}

// Update adds or replaces the docs of upserts and removes the named
// repositories, under one write lock.
func (ix *Index) Update(upserts []Doc, removes []string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	st := ix.st
	for _, name := range removes {
		if id, ok := st.byName[name]; ok {
			st.remove(id)
		}
	}
	for _, d := range upserts {
		if id, ok := st.byName[d.Name]; ok {
			cur := &st.docs[id]
			if cur.Description == d.Description {
				cur.Doc = d // same tokens: only flags and counters change
				st.meta[id] = metaOf(d, st.meta[id].ns)
				continue
			}
			st.remove(id)
		}
		var id int32
		if n := len(st.free); n > 0 {
			id, st.free = st.free[n-1], st.free[:n-1]
		} else {
			id = st.newSlot()
		}
		st.fill(id, d, true)
	}
	st.names.merge()
	st.descs.merge()
	st.fulls.merge()
}

// newSlot appends an empty doc and returns its id.
func (st *state) newSlot() int32 {
	id := int32(len(st.docs))
	st.docs = append(st.docs, doc{})
	st.meta = append(st.meta, meta{})
	return id
}

// boost is the popularity part of the relevance of d.
func boost(d Doc) float32 {
	return float32(0.5*math.Log1p(float64(max(d.Stars, 0))) + 0.25*math.Log1p(float64(max(d.Pulls, 0))))
}

// fill indexes d as doc id; insert keeps posting lists sorted when id is
// not the largest (a reused slot).
func (st *state) fill(id int32, d Doc, insert bool) {
	ns := hubmesh.RepoOf(d.Name)
	short := d.Name
	if ns != "" {
		short = d.Name[len(ns)+1:]
	}
	nt := st.names.add(tokens(d.Name, 0), id, insert)
	dt := st.descs.add(tokens(d.Description, maxDescTokens), id, insert)
	fulls := []string{d.Name}
	if short != d.Name {
		fulls = append(fulls, short)
	}
	for _, k := range fulls {
		st.fulls.pending = append(st.fulls.pending, pent{key: k, id: id})
	}
	nsID, ok := st.nsIDs[ns]
	if !ok {
		nsID = uint32(len(st.nsIDs))
		st.nsIDs[ns] = nsID
	}
	st.docs[id] = doc{Doc: d, ns: ns, short: short, nameToks: nt, descToks: dt}
	st.meta[id] = metaOf(d, nsID)
	st.byName[d.Name] = id
	st.live++
}

func (st *state) remove(id int32) {
	d := &st.docs[id]
	st.names.drop(d.nameToks, id)
	st.descs.drop(d.descToks, id)
	st.fulls.drop(d.Name, id)
	st.fulls.drop(d.short, id)
	delete(st.byName, d.Name)
	*d = doc{}
	st.meta[id] = meta{}
	st.free = append(st.free, id)
	st.live--
}

// add records that doc id has terms and returns their ids.
func (dc *dict) add(terms []string, id int32, insert bool) []uint32 {
	out := make([]uint32, 0, len(terms))
	for _, t := range terms {
		tid, ok := dc.ids[t]
		if !ok {
			tid = uint32(len(dc.terms))
			dc.ids[t] = tid
			dc.terms = append(dc.terms, t)
			dc.post = append(dc.post, nil)
			dc.pending = append(dc.pending, tid)
		}
		p := dc.post[tid]
		if !insert || len(p) == 0 || p[len(p)-1] < id {
			dc.post[tid] = append(p, id)
		} else if i, found := slices.BinarySearch(p, id); !found {
			dc.post[tid] = slices.Insert(p, i, id)
		}
		out = append(out, tid)
	}
	return out
}

func (dc *dict) drop(tids []uint32, id int32) {
	for _, tid := range tids {
		p := dc.post[tid]
		if i, found := slices.BinarySearch(p, id); found {
			dc.post[tid] = slices.Delete(p, i, i+1)
		}
	}
}

func (dc *dict) less(a, b uint32) int { return strings.Compare(dc.terms[a], dc.terms[b]) }

// finish sorts the term ids of a freshly built dict.
func (dc *dict) finish() {
	dc.sorted = append(dc.sorted, dc.pending...)
	dc.pending = nil
	slices.SortFunc(dc.sorted, dc.less)
}

// merge folds the pending term ids into the sorted ones (linear merge).
func (dc *dict) merge() {
	if len(dc.pending) == 0 {
		return
	}
	slices.SortFunc(dc.pending, dc.less)
	out := make([]uint32, 0, len(dc.sorted)+len(dc.pending))
	i, j := 0, 0
	for i < len(dc.sorted) && j < len(dc.pending) {
		if dc.less(dc.sorted[i], dc.pending[j]) <= 0 {
			out = append(out, dc.sorted[i])
			i++
		} else {
			out = append(out, dc.pending[j])
			j++
		}
	}
	out = append(append(out, dc.sorted[i:]...), dc.pending[j:]...)
	dc.sorted, dc.pending = out, nil
}

// prefixRange returns the term ids of the terms starting with p, in term
// order.
func (dc *dict) prefixRange(p string) []uint32 {
	return withPrefix(dc.sorted, p, func(tid uint32, p string) int { return strings.Compare(dc.terms[tid], p) })
}

// withPrefix returns the elements of sorted whose keys start with p;
// sorted is in key order, and cmp compares an element's key with a string.
func withPrefix[E any](sorted []E, p string, cmp func(E, string) int) []E {
	lo, _ := slices.BinarySearchFunc(sorted, p, cmp)
	hi := len(sorted)
	if end, ok := prefixEnd(p); ok {
		hi, _ = slices.BinarySearchFunc(sorted[lo:], end, cmp)
		hi += lo
	}
	return sorted[lo:hi]
}

// prefixEnd is the smallest string greater than every string starting
// with p; ok is false when there is none (p is empty or all 0xff).
func prefixEnd(p string) (string, bool) {
	b := []byte(p)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// prefixIndex is a sorted array of (key, doc id): a prefix is one
// contiguous range, found with two binary searches, whose ids are read
// without touching the keys. Additions wait in pending and removals are
// marked (id -1) until merge rebuilds the array.
type prefixIndex struct {
	ents    []pent
	pending []pent
	dead    int
}

type pent struct {
	key string
	id  int32
}

func cmpPent(a pent, k string) int { return strings.Compare(a.key, k) }

func (p *prefixIndex) drop(key string, id int32) {
	i, _ := slices.BinarySearchFunc(p.ents, key, cmpPent)
	for ; i < len(p.ents) && p.ents[i].key == key; i++ {
		if p.ents[i].id == id {
			p.ents[i].id = -1
			p.dead++
			return
		}
	}
	for i := range p.pending {
		if p.pending[i].key == key && p.pending[i].id == id {
			p.pending = slices.Delete(p.pending, i, i+1)
			return
		}
	}
}

// merge folds pending entries in and drops removed ones.
func (p *prefixIndex) merge() {
	if len(p.pending) == 0 && p.dead == 0 {
		return
	}
	cmpEnt := func(a, b pent) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return int(a.id) - int(b.id)
	}
	slices.SortFunc(p.pending, cmpEnt)
	out := make([]pent, 0, len(p.ents)-p.dead+len(p.pending))
	i, j := 0, 0
	for i < len(p.ents) || j < len(p.pending) {
		switch {
		case i < len(p.ents) && p.ents[i].id < 0:
			i++
		case j == len(p.pending) || (i < len(p.ents) && cmpEnt(p.ents[i], p.pending[j]) <= 0):
			out = append(out, p.ents[i])
			i++
		default:
			out = append(out, p.pending[j])
			j++
		}
	}
	p.ents, p.pending, p.dead = out, nil, 0
}

// rangeOf returns the entries whose key starts with prefix, in key order.
func (p *prefixIndex) rangeOf(prefix string) []pent {
	return withPrefix(p.ents, prefix, cmpPent)
}

// tokens splits s into distinct lowercase tokens at every rune that is
// not a letter or a digit (so at '/', '-', '_', '.' and spaces), keeping
// at most max of them (0: all).
func tokens(s string, maxN int) []string {
	var out []string
	start := -1
	emit := func(end int) {
		t := s[start:end]
		if !isLower(t) {
			t = strings.ToLower(t)
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
		start = -1
	}
	for i, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			emit(i)
			if maxN > 0 && len(out) >= maxN {
				return out
			}
		}
	}
	if start >= 0 && (maxN <= 0 || len(out) < maxN) {
		emit(len(s))
	}
	return out
}

func isLower(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// Match tiers, best first.
const (
	tierDesc   = 1 // some query token only in the description
	tierTokens = 2 // every query token in the name
	tierPrefix = 3 // the name starts with the query
	tierExact  = 4 // the name is the query
)

// candidate is a match being ranked.
type candidate struct {
	id       int32
	tier     uint8
	official bool
	rel      float32
}

// better reports whether a ranks before b.
func better(st *state, a, b candidate) bool {
	if a.tier != b.tier {
		return a.tier > b.tier
	}
	if a.official != b.official {
		return a.official
	}
	if a.rel != b.rel {
		return a.rel > b.rel
	}
	return st.docs[a.id].Name < st.docs[b.id].Name
}

// worstFirst is a heap whose top is the worst of the best k kept.
type worstFirst struct {
	st *state
	c  []candidate
}

func (h *worstFirst) Len() int           { return len(h.c) }
func (h *worstFirst) Less(i, j int) bool { return better(h.st, h.c[j], h.c[i]) }
func (h *worstFirst) Swap(i, j int)      { h.c[i], h.c[j] = h.c[j], h.c[i] }
func (h *worstFirst) Push(x any)         { h.c = append(h.c, x.(candidate)) }
func (h *worstFirst) Pop() any {
	x := h.c[len(h.c)-1]
	h.c = h.c[:len(h.c)-1]
	return x
}

// scratch holds a per-query array indexed by doc id; only the entries of
// touched and tiered are non-zero between queries.
type scratch struct {
	m       []mstate
	touched []int32 // docs matching the first query token
	tiered  []int32 // docs whose name is or starts with the query
}

// mstate is the match state of one doc in one query.
type mstate struct {
	count  uint8  // query tokens matched so far
	inDesc bool   // some token matched only in the description
	tier   uint8  // tierExact or tierPrefix when the name says so
	score  uint16 // token quality sum
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func (s *scratch) grow(n int) {
	if len(s.m) < n {
		s.m = make([]mstate, max(n, 1024)*5/4)
	}
}

func (s *scratch) reset() {
	for _, id := range s.touched {
		s.m[id] = mstate{}
	}
	for _, id := range s.tiered {
		s.m[id] = mstate{}
	}
	s.touched, s.tiered = s.touched[:0], s.tiered[:0]
}

// Search runs q.
func (ix *Index) Search(q Query) Result {
	page, size := max(q.Page, 1), q.PageSize
	if size <= 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	text := strings.ToLower(strings.TrimSpace(q.Text))
	if len(text) > maxQueryLen {
		text = text[:maxQueryLen]
	}
	qt := tokens(text, maxQueryTokens)
	res := Result{Page: page, PageSize: size, Hits: []Hit{}}
	if text != "" && len(qt) == 0 {
		return res // punctuation only: nothing can match
	}

	ix.mu.RLock()
	defer ix.mu.RUnlock()
	st := ix.st
	sc := scratchPool.Get().(*scratch)
	defer func() { sc.reset(); scratchPool.Put(sc) }()
	sc.grow(len(st.docs))

	k := page * size
	h := &worstFirst{st: st, c: make([]candidate, 0, min(k, 1024))}
	f, ok := st.filter(&q)
	if !ok {
		return res
	}
	consider := func(id int32, tier uint8, rel float32) {
		m := &st.meta[id]
		if !f.keeps(st, id, m) {
			return
		}
		res.Total++
		c := candidate{id: id, tier: tier, official: m.flags&flagOfficial != 0, rel: rel + m.boost}
		if h.Len() < k {
			heap.Push(h, c)
		} else if better(st, c, h.c[0]) {
			h.c[0] = c
			heap.Fix(h, 0)
		}
	}

	if len(qt) == 0 {
		for id := range st.meta {
			if st.meta[id].flags&flagAlive != 0 {
				consider(int32(id), tierDesc, 0)
			}
		}
	} else {
		st.tierNames(sc, text)
		st.match(sc, qt)
		full := uint8(len(qt))
		rank := func(id int32) {
			ms := sc.m[id]
			if ms.count != full {
				return
			}
			tier := ms.tier
			if tier == 0 {
				tier = tierTokens
				if ms.inDesc {
					tier = tierDesc
				}
			}
			consider(id, tier, float32(ms.score))
		}
		if len(sc.touched) > len(st.meta)/16 {
			// Many candidates: walk the ids in order, so that reading
			// their match state and metadata streams through memory.
			for id := range st.meta {
				rank(int32(id))
			}
		} else {
			for _, id := range sc.touched {
				rank(id)
			}
		}
	}

	// The heap holds the best k; the page is its tail end once sorted.
	best := h.c
	slices.SortFunc(best, func(a, b candidate) int {
		if better(st, a, b) {
			return -1
		}
		if better(st, b, a) {
			return 1
		}
		return 0
	})
	from := (page - 1) * size
	if from >= len(best) {
		return res
	}
	for _, c := range best[from:min(len(best), from+size)] {
		d := &st.docs[c.id]
		res.Hits = append(res.Hits, Hit{
			Name: d.Name, Namespace: d.ns, Description: d.Description, Private: d.Private,
			Official: d.Official, Automated: d.Automated, Stars: d.Stars, Pulls: d.Pulls,
		})
	}
	return res
}

// filter is a query's filters, as flag masks and ids.
type filter struct {
	mask, want uint8 // flags that must have the wanted values
	ns         uint32
	byNS       bool
	minStars   int32
	seeAll     bool
	canSee     func(string) bool
}

// filter compiles the filters of q; ok is false when nothing can pass.
func (st *state) filter(q *Query) (filter, bool) {
	f := filter{mask: flagAlive, want: flagAlive, minStars: int32(min(max(q.MinStars, 0), math.MaxInt32)), seeAll: q.SeeAll, canSee: q.CanSee}
	if q.Namespace != "" {
		id, ok := st.nsIDs[q.Namespace]
		if !ok {
			return f, false
		}
		f.ns, f.byNS = id, true
	}
	for _, c := range []struct {
		v    *bool
		flag uint8
	}{{q.Official, flagOfficial}, {q.Automated, flagAutomated}} {
		if c.v != nil {
			f.mask |= c.flag
			if *c.v {
				f.want |= c.flag
			}
		}
	}
	return f, true
}

// keeps applies f to doc id, visibility last (it may cost a call).
func (f *filter) keeps(st *state, id int32, m *meta) bool {
	switch {
	case m.flags&f.mask != f.want, f.byNS && m.ns != f.ns, m.stars < f.minStars:
		return false
	case m.flags&flagPrivate == 0 || f.seeAll:
		return true
	}
	return f.canSee != nil && f.canSee(st.docs[id].Name)
}

// tierNames marks the docs whose name (whole, or after the namespace) is
// or starts with text.
func (st *state) tierNames(sc *scratch, text string) {
	ents := st.fulls.rangeOf(text)
	exact := 0 // the exact matches sort first in the range
	for exact < len(ents) && len(ents[exact].key) == len(text) {
		exact++
	}
	for i, e := range ents {
		if e.id < 0 {
			continue
		}
		tier := uint8(tierPrefix)
		if i < exact {
			tier = tierExact
		}
		m := &sc.m[e.id]
		if m.tier == 0 {
			sc.tiered = append(sc.tiered, e.id)
		}
		m.tier = max(m.tier, tier)
	}
}

// Token match qualities.
const (
	qualityExact  = 3 // a name token equals the query token
	qualityPrefix = 2 // a name token starts with it
	qualityDesc   = 1 // a description token equals it
)

// match counts, per doc, the query tokens it matches (every one must),
// with the best quality of each.
func (st *state) match(sc *scratch, qt []string) {
	for i, t := range qt {
		step := uint8(i)
		hit := false
		visit := func(p []int32, quality uint16) {
			for _, id := range p {
				m := &sc.m[id]
				if m.count != step {
					continue
				}
				if step == 0 {
					sc.touched = append(sc.touched, id)
				}
				m.count = step + 1
				m.score += quality
				if quality == qualityDesc {
					m.inDesc = true
				}
				hit = true
			}
		}
		exact, hasExact := st.names.ids[t]
		if hasExact {
			visit(st.names.post[exact], qualityExact)
		}
		for _, tid := range st.names.prefixRange(t) {
			if !hasExact || tid != exact {
				visit(st.names.post[tid], qualityPrefix)
			}
		}
		if tid, ok := st.descs.ids[t]; ok {
			visit(st.descs.post[tid], qualityDesc)
		}
		if !hit {
			return // no doc matches every token
		}
	}
}
