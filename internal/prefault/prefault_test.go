package prefault

import (
	"bufio"
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

const sampleMaps = `00400000-00d62000 r-xp 00000000 fe:00 9978673                            /usr/local/bin/mbot
00d62000-016bb000 r--p 00962000 fe:00 9978673                            /usr/local/bin/mbot
016bb000-01755000 rw-p 012bb000 fe:00 9978673                            /usr/local/bin/mbot
01755000-037a1000 rw-p 00000000 00:00 0 
1d4008000000-1d4008400000 ---p 00000000 00:00 0 
1d4008400000-1d4008c00000 rw-p 00000000 00:00 0 
1d4008c00000-1d400c000000 ---p 00000000 00:00 0 
7f0fe8ca0000-7f0fe8d00000 rw-p 00000000 00:00 0 
7f0fe8d00000-7f0feae00000 rw-p 00000000 00:00 0 
7f102f83c000-7f102f840000 r--p 00000000 00:00 0                          [vvar]
7f102f842000-7f102f844000 r-xp 00000000 00:00 0                          [vdso]
7ffdcb1b9000-7ffdcb1da000 rw-p 00000000 00:00 0                          [stack]
7ffdcb1da000-7ffdcb1db000 rw-p 00000000 00:00 0                          /tmp/a file with spaces
`

func TestPlan(t *testing.T) {
	heap := uintptr(0x1d4008412340)
	got := plan([]byte(sampleMaps), heap)
	want := []region{
		{0x00400000, 0x00d62000, madvPopulateRead},                    // code
		{0x016bb000, 0x01755000, madvPopulateWrite},                   // data
		{0x1d4008400000, 0x1d4008400000 + maxHeap, madvPopulateWrite}, // heap, bounded
		{0x7f0fe8ca0000, 0x7f0fe8d00000, madvPopulateWrite},           // small runtime metadata
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("plan:\n got %x\nwant %x", got, want)
	}
}

// TestPlanPIE reads the layout of a position-independent executable: the
// Go heap's reservation may sit below the executable.
func TestPlanPIE(t *testing.T) {
	maps := `0c4000000000-0c4000400000 rw-p 00000000 00:00 0 
0c4000400000-0c4004000000 ---p 00000000 00:00 0 
55d0c0000000-55d0c0962000 r-xp 00000000 fe:00 42                         /usr/bin/mbot
55d0c0962000-55d0c12bb000 r--p 00962000 fe:00 42                         /usr/bin/mbot
55d0c12bb000-55d0c1355000 rw-p 012bb000 fe:00 42                         /usr/bin/mbot
55d0c1355000-55d0c33a1000 rw-p 00000000 00:00 0 
`
	got := plan([]byte(maps), 0x0c4000000040)
	want := []region{
		{0x0c4000000000, 0x0c4000400000, madvPopulateWrite},
		{0x55d0c0000000, 0x55d0c0962000, madvPopulateRead},
		{0x55d0c12bb000, 0x55d0c1355000, madvPopulateWrite},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("plan:\n got %x\nwant %x", got, want)
	}
}

// TestImportsOnlySyscall keeps the initializer early: Go initializes a
// package only after everything it imports (see doc.go).
func TestImportsOnlySyscall(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if path, _ := strconv.Unquote(imp.Path.Value); path != "syscall" && path != "unsafe" {
				t.Errorf("%s imports %s; the package may import only syscall and unsafe", name, path)
			}
		}
	}
}

func TestPlanSkipsWhatItCannotParse(t *testing.T) {
	for _, maps := range []string{
		"",
		"garbage\n",
		"00400000 r-xp 00000000 fe:00 1 /bin/x\n",
		"zz-00401000 r-xp 00000000 fe:00 1 /bin/x\n",
		"00401000-00400000 r-xp 00000000 fe:00 1 /bin/x\n",
		"00400000-00401000 rw 00000000 fe:00 1 /bin/x\n",
	} {
		if got := plan([]byte(maps), 0); len(got) != 0 {
			t.Errorf("plan(%q) = %x, want nothing", maps, got)
		}
	}
}

// TestMemoryIsMapped checks that the package initializer mapped the whole
// executable code and the heap's first chunk of this test binary into the
// process, and that with MBOT_PREFAULT=off it did not (so that the check
// can fail).
func TestMemoryIsMapped(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("prefaulting is Linux-only")
	}
	if os.Getenv("PREFAULT_TEST_REPORT") != "" {
		codeRSS, codeSize := residency(t, func(mapping) bool { return true })
		probe := uintptr(unsafe.Pointer(new([64]byte)))
		heapRSS, heapSize := residency(t, func(m mapping) bool { return m.lo <= probe && probe < m.hi })
		fmt.Printf("residency %g %g\n", float64(codeRSS)/float64(codeSize), float64(heapRSS)/float64(min(heapSize, maxHeap>>10)))
		return
	}
	resident := func(off bool) (code, heap float64) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryIsMapped$")
		cmd.Env = append(os.Environ(), "PREFAULT_TEST_REPORT=1")
		if off {
			cmd.Env = append(cmd.Env, "MBOT_PREFAULT=off")
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for line := range strings.Lines(string(out)) {
			if _, err := fmt.Sscanf(line, "residency %g %g", &code, &heap); err == nil {
				return code, heap
			}
		}
		t.Fatalf("no residency report in:\n%s", out)
		return 0, 0
	}
	code, heap := resident(false)
	codeOff, heapOff := resident(true)
	t.Logf("resident: code %.0f%%, heap %.0f%%; with MBOT_PREFAULT=off: code %.0f%%, heap %.0f%%",
		code*100, heap*100, codeOff*100, heapOff*100)
	if code < 0.99 || heap < 0.99 {
		t.Errorf("prefaulting left code %.0f%% and heap %.0f%% mapped, want all", code*100, heap*100)
	}
	if heapOff >= 0.99 {
		t.Errorf("the heap is all mapped with MBOT_PREFAULT=off too; the check proves nothing")
	}
}

// residency reads from /proc/self/smaps the resident and whole size, in
// kB, of the first mapping that match selects.
func residency(t *testing.T, match func(mapping) bool) (rss, size int) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	matched := false
	for sc.Scan() {
		if m, ok := parseMapping(sc.Bytes()); ok {
			if matched {
				break
			}
			matched = match(m)
			continue
		}
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !matched || !ok || (name != "Size" && name != "Rss") {
			continue
		}
		kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")))
		if err != nil {
			t.Fatal(err)
		}
		if name == "Size" {
			size = kb
		} else {
			rss = kb
		}
	}
	if size == 0 {
		t.Fatal("no matching mapping in /proc/self/smaps")
	}
	return rss, size
}
