package prefault

const (
	madvPopulateRead  = 22 // Linux 5.14
	madvPopulateWrite = 23

	// maxHeap bounds the Go heap populated; a one-shot run allocates less.
	maxHeap = 8 << 20
	// maxMetadata is the size of the largest anonymous mapping (runtime
	// metadata, thread stacks) populated whole.
	maxMetadata = 1 << 20
)

// region is one madvise call: populate [lo, hi) for reading or writing.
type region struct {
	lo, hi, advice uintptr
}

// mapping is one line of /proc/self/maps.
type mapping struct {
	lo, hi               uintptr
	writable, executable bool
	path                 string
}

// plan chooses what to populate from the text of /proc/self/maps and the
// address of a heap object: the executable's code and data (the first
// file mapped is the executable), the heap's first chunk and the small
// anonymous mappings of the runtime. Measured on the CI VM, read-only data
// (type and function tables, 10 MB of which a run reads little) and zeroed
// data (.bss, with the runtime's untouched 32 MiB buffer) cost more to
// populate than their faults do, so they are left to fault in.
func plan(maps []byte, heap uintptr) []region {
	var regions []region
	exe := ""
	afterExe := false
	for len(maps) > 0 {
		line := maps
		if i := indexByte(maps, '\n'); i >= 0 {
			line, maps = maps[:i], maps[i+1:]
		} else {
			maps = nil
		}
		m, ok := parseMapping(line)
		if !ok {
			continue
		}
		if exe == "" && len(m.path) > 0 && m.path[0] == '/' {
			exe = m.path // the first file mapped is the executable, PIE or not
		}
		isExe := m.path != "" && m.path == exe
		switch {
		case isExe && m.writable:
			regions = append(regions, region{m.lo, m.hi, madvPopulateWrite})
		case isExe && m.executable:
			regions = append(regions, region{m.lo, m.hi, madvPopulateRead})
		case isExe || afterExe:
			// Read-only and zeroed data.
		case m.path != "" || !m.writable:
			// Named mappings ([stack], [vdso], files) and reservations.
		case m.lo <= heap && heap < m.hi:
			regions = append(regions, region{m.lo, min(m.hi, m.lo+maxHeap), madvPopulateWrite})
		case m.hi-m.lo <= maxMetadata:
			regions = append(regions, region{m.lo, m.hi, madvPopulateWrite})
		}
		afterExe = isExe
	}
	return regions
}

// parseMapping parses "lo-hi perms offset dev inode [path]".
func parseMapping(line []byte) (mapping, bool) {
	var m mapping
	var fields [6][]byte
	n := 0
	for i := 0; i < len(line) && n < len(fields); {
		for i < len(line) && line[i] == ' ' {
			i++
		}
		if i == len(line) {
			break
		}
		j := i
		if n == len(fields)-1 {
			j = len(line) // the path may hold spaces
		} else {
			for j < len(line) && line[j] != ' ' {
				j++
			}
		}
		fields[n] = line[i:j]
		n++
		i = j
	}
	if n < 5 || len(fields[1]) != 4 {
		return m, false
	}
	dash := indexByte(fields[0], '-')
	if dash < 0 {
		return m, false
	}
	var ok1, ok2 bool
	m.lo, ok1 = parseHex(fields[0][:dash])
	m.hi, ok2 = parseHex(fields[0][dash+1:])
	if !ok1 || !ok2 || m.hi <= m.lo {
		return m, false
	}
	m.writable = fields[1][1] == 'w'
	m.executable = fields[1][2] == 'x'
	m.path = string(fields[5])
	return m, true
}

func parseHex(b []byte) (uintptr, bool) {
	if len(b) == 0 || len(b) > 16 {
		return 0, false
	}
	var v uintptr
	for _, c := range b {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uintptr(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uintptr(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
