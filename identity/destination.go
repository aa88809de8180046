package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// An output directory holds private keys, so mbot writes one only where
// nobody else decides what ends up there:
//
//   - the directory itself must not be a symbolic link: whoever can change
//     the link would choose where the keys land. Links higher up the path
//     are fine (macOS's /tmp is one), and the parent may be shared: the
//     directory mbot writes is its own, 0700, made fresh for every write.
//   - an existing directory must belong to the user mbot runs as and hold
//     nothing but regular files mbot writes;
//   - missing parent directories are created with mode 0700 (callers say
//     so, see MissingParents), never with looser modes;
//   - files are created with O_EXCL inside a directory mbot has just made
//     and holds open, and the result is checked after it is moved into
//     place, so a link planted at the temporary name, at a file name or at
//     the destination between the checks and the rename is never followed.

// CheckDir checks, without changing anything, that an identity can be
// written to dir: callers run it before a join or a signing so that a bad
// destination costs no proof and no certificate.
func CheckDir(dir string) error { return CheckDirOwned(dir, nil) }

// Owner is the user and group an output directory and its files are given
// to (owner: in mbot.yaml, mbot sign --owner), for a server that reads its
// credentials as its own user: PostgreSQL refuses a key it does not own.
// A directory of that user is then mbot's to replace too.
type Owner struct{ UID, GID int }

// CheckDirOwned is CheckDir for a directory written for owner (nil: none).
func CheckDirOwned(dir string, owner *Owner) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	return checkDir(abs, nil, owner)
}

// MissingParents returns the directories WriteDir will create (mode 0700)
// above dir, outermost first, so that callers can say so.
func MissingParents(dir string) []string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil
	}
	return missingParents(abs)
}

// WriteDir replaces dir with exactly files, all at once: the files are
// written in a private temporary directory beside dir, which is then renamed
// into place. A failure at any point leaves dir as it was. Files are not
// fsynced one by one: the credentials are short-lived and re-issued by the
// next run, so surviving a power cut is not worth ten fsyncs per run; only
// the final rename is synced.
// An existing dir is replaced only if it holds nothing but files mbot
// writes, so a mistyped --out never deletes someone's files; a dir that is
// a symbolic link or belongs to another user is refused (see CheckDir).
func WriteDir(dir string, files []File) error { return WriteDirOwned(dir, files, nil) }

// WriteDirOwned is WriteDir giving the directory and its files to owner
// (nil: none) before they are moved into place, so that the server never
// sees them owned by anyone else. It needs the privilege to chown (root).
func WriteDirOwned(dir string, files []File, owner *Owner) error {
	err := WriteDirs([]OutputDir{{Path: dir, Files: files, Owner: owner}})
	if de, ok := err.(*DirError); ok {
		return de.Err
	}
	return err
}

// OutputDir is one directory of WriteDirs: where, exactly which files, and
// who they are given to (nil: nobody else).
type OutputDir struct {
	Path  string
	Files []File
	Owner *Owner
}

// DirError is WriteDirs' failure at one of its directories, dirs[Index].
type DirError struct {
	Index int
	Err   error
}

func (e *DirError) Error() string { return e.Err.Error() }
func (e *DirError) Unwrap() error { return e.Err }

// WriteDirs replaces every directory of dirs as WriteDir does, all or
// nothing: each is checked, then all are written at once, each into its
// own temporary directory, and only when every one is complete are they
// moved into place, one rename each. If a write or a rename fails, the
// directories already moved are put back, so every destination is left as
// it was. The parents are synced once each, together, at the end: one
// journal commit for the run rather than one per directory.
func WriteDirs(dirs []OutputDir) error {
	st := make([]*stagedDir, len(dirs))
	for i, d := range dirs {
		abs, err := filepath.Abs(d.Path)
		if err != nil {
			return &DirError{i, err}
		}
		if err := checkDir(abs, d.Files, d.Owner); err != nil {
			return &DirError{i, err}
		}
		for j := range i {
			if p := st[j].Path; p == abs || strings.HasPrefix(abs, p+string(filepath.Separator)) || strings.HasPrefix(p, abs+string(filepath.Separator)) {
				return &DirError{i, fmt.Errorf("%s and %s are the same or nested directories; give each output its own", p, abs)}
			}
		}
		st[i] = &stagedDir{OutputDir: OutputDir{Path: abs, Files: d.Files, Owner: d.Owner}}
	}
	for i, s := range st {
		for _, p := range missingParents(s.Path) {
			if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return &DirError{i, fmt.Errorf("creating %s: %w", p, err)}
			}
		}
	}
	defer func() {
		for _, s := range st {
			if !s.moved && s.tmp != "" {
				os.RemoveAll(s.tmp) // removes a link planted at tmp, never its target
			}
		}
	}()
	if err := eachDir(st, (*stagedDir).stage); err != nil {
		return err
	}
	for i, s := range st {
		if raceHook != nil {
			raceHook(s.Path)
		}
		if err := s.moveIntoPlace(); err != nil {
			for _, done := range slices.Backward(st[:i]) {
				done.putBack()
			}
			return &DirError{i, err}
		}
	}
	// Every directory is in place: remove the earlier identities, then
	// make the renames durable, each parent once.
	_ = eachDir(st, (*stagedDir).removeEarlier)
	var parents []*stagedDir
	for _, s := range st {
		if !slices.ContainsFunc(parents, func(p *stagedDir) bool { return filepath.Dir(p.Path) == filepath.Dir(s.Path) }) {
			parents = append(parents, s)
		}
	}
	return eachDir(parents, func(s *stagedDir) error { return syncDir(filepath.Dir(s.Path)) })
}

// eachDir runs f on every directory at once and returns the first
// directory's error, in the order of dirs.
func eachDir(dirs []*stagedDir, f func(*stagedDir) error) error {
	errs := make([]error, len(dirs))
	if len(dirs) == 1 {
		errs[0] = f(dirs[0])
	} else {
		var wg sync.WaitGroup
		for i, s := range dirs {
			wg.Go(func() { errs[i] = f(s) })
		}
		wg.Wait()
	}
	for i, err := range errs {
		if err != nil {
			return &DirError{i, err}
		}
	}
	return nil
}

// stagedDir is one directory of WriteDirs on its way into place.
type stagedDir struct {
	OutputDir
	// tmp is the temporary directory beside Path that the files are
	// written in; once moved, it holds what Path held (existed), if anything.
	tmp  string
	made fs.FileInfo // tmp as created
	// existed says Path held an earlier identity, exchanged into tmp.
	existed, moved bool
}

// stage writes the files into a new temporary directory beside Path.
func (s *stagedDir) stage() error {
	// MkdirTemp makes a new directory, 0700, under a random name: mkdir
	// never follows a link planted at the name, it fails and picks another.
	tmp, err := os.MkdirTemp(filepath.Dir(s.Path), "."+filepath.Base(s.Path)+".new-")
	if err != nil {
		return fmt.Errorf("writing identity next to %s: %w", s.Path, err)
	}
	s.tmp = tmp
	if s.made, err = os.Lstat(tmp); err != nil {
		return err
	}
	return writeFiles(tmp, s.made, s.Files, s.Owner)
}

// moveIntoPlace renames the staged directory to Path, exchanging it with an
// earlier identity there, and checks that Path is then that directory.
func (s *stagedDir) moveIntoPlace() error {
	if _, err := os.Lstat(s.Path); errors.Is(err, fs.ErrNotExist) {
		if err := renameNoReplace(s.tmp, s.Path); err != nil {
			return fmt.Errorf("moving identity into %s: %w", s.Path, err)
		}
	} else {
		if err := swapDirs(s.tmp, s.Path); err != nil {
			return fmt.Errorf("replacing %s: %w", s.Path, err)
		}
		s.existed = true
	}
	s.moved = true
	if now, err := os.Lstat(s.Path); err != nil || !os.SameFile(now, s.made) {
		// made is the directory as created: the same inode after a chown.
		// What was exchanged out is removed as an earlier identity would be.
		_ = s.removeEarlier()
		return fmt.Errorf("%s was replaced by something else while mbot wrote it; is %s writable by other users? Choose a directory only you can write to", s.Path, filepath.Dir(s.Path))
	}
	return nil
}

// putBack undoes moveIntoPlace after another directory failed: Path holds
// again what it held, and the new directory is back at tmp, to be removed.
func (s *stagedDir) putBack() {
	var err error
	if s.existed {
		err = swapDirs(s.tmp, s.Path)
	} else {
		err = renameNoReplace(s.Path, s.tmp)
	}
	if err != nil {
		return // left in place; the caller removes what a failed run wrote
	}
	s.moved, s.existed = false, false
	if now, err := os.Lstat(s.tmp); err != nil || !os.SameFile(now, s.made) {
		s.tmp = "" // not ours to remove
	}
}

// removeEarlier removes what moveIntoPlace exchanged out of Path: the
// earlier identity, checked to be only files mbot writes. If a link was put
// in Path's place after the check, tmp is that link: only the link is
// removed, never files behind it.
func (s *stagedDir) removeEarlier() error {
	if !s.existed {
		return nil
	}
	if old, err := os.Lstat(s.tmp); err == nil && old.IsDir() && ownedBy(old, s.Owner) {
		_ = removeIdentityFiles(s.tmp, s.Files)
	}
	_ = os.Remove(s.tmp)
	return nil
}

// raceHook, set by tests, runs between the checks and the rename, where
// another user could change dir.
var raceHook func(dir string)

// writeFiles creates files in tmp, the directory just made whose Lstat is
// made, through a handle on that very directory.
func writeFiles(tmp string, made fs.FileInfo, files []File, owner *Owner) error {
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return fmt.Errorf("writing identity: %w", err)
	}
	defer root.Close()
	if st, err := root.Stat("."); err != nil || !os.SameFile(st, made) {
		return fmt.Errorf("the temporary directory %s was replaced before mbot wrote to it; is %s writable by other users? Choose a directory only you can write to", tmp, filepath.Dir(tmp))
	}
	for _, f := range files {
		if err := writeNew(root, f.Name, f.Data, f.Mode); err != nil {
			return fmt.Errorf("writing %s: %w", f.Name, err)
		}
	}
	if owner == nil {
		return nil
	}
	// The files first, the directory last: until then only mbot can enter it.
	for _, f := range files {
		if err := root.Lchown(f.Name, owner.UID, owner.GID); err != nil {
			return fmt.Errorf("giving %s to %d:%d: %w (owner: needs mbot to run as root)", f.Name, owner.UID, owner.GID, err)
		}
	}
	if err := root.Lchown(".", owner.UID, owner.GID); err != nil {
		return fmt.Errorf("giving %s to %d:%d: %w (owner: needs mbot to run as root)", tmp, owner.UID, owner.GID, err)
	}
	return nil
}

// RemoveStale deletes an identity that an earlier run left in dir, so that a
// failed run never leaves credentials that later steps could mistake for
// fresh ones. It removes only files mbot writes, never through a symbolic
// link and never in a directory of another user. It reports whether it
// removed any.
func RemoveStale(dir string) (bool, error) { return RemoveStaleOwned(dir, nil) }

// RemoveStaleOwned is RemoveStale for a directory written for owner (nil: none).
func RemoveStaleOwned(dir string, owner *Owner) (bool, error) {
	st, err := os.Lstat(dir)
	if err != nil || !st.IsDir() || !ownedBy(st, owner) {
		return false, nil
	}
	if !slices.ContainsFunc(summaryFiles, func(name string) bool {
		fi, err := os.Lstat(filepath.Join(dir, name))
		return err == nil && fi.Mode().IsRegular()
	}) {
		return false, nil
	}
	if err := removeIdentityFiles(dir, nil); err != nil {
		return true, err
	}
	_ = os.Remove(dir) // only succeeds if nothing else is in it
	return true, nil
}

// removeIdentityFiles removes the files mbot writes (and those named in
// files) from dir; os.Remove unlinks a link without following it. Only the
// names dir holds are tried, not every name of every output type.
func removeIdentityFiles(dir string, files []File) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !slices.Contains(identityFiles, name) && !slices.ContainsFunc(files, func(f File) bool { return f.Name == name }) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkDir checks the absolute path dir as WriteDir's destination; files
// are the names it will write, which an existing dir may hold too.
func checkDir(dir string, files []File, owner *Owner) error {
	if err := checkPathChars(dir); err != nil {
		return err
	}
	st, err := os.Lstat(dir)
	if isMissing(err) {
		return checkAncestor(dir)
	}
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSymlink != 0 {
		return linkError(dir)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s exists and is not a directory; choose another --out", dir)
	}
	if uid, ok := ownerUID(st); ok && !ownedBy(st, owner) {
		return fmt.Errorf("%s belongs to another user (uid %d; mbot runs as uid %d), so that user decides what is in it; mbot writes credentials only into a directory of its own: choose another --out",
			dir, uid, os.Geteuid())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		ours := slices.Contains(identityFiles, e.Name()) ||
			slices.ContainsFunc(files, func(f File) bool { return f.Name == e.Name() })
		switch {
		case !ours:
			return fmt.Errorf("%s holds %s, which mbot did not write; choose an empty or new --out directory", dir, Quote(e.Name()))
		case e.Type()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s holds %s, a symbolic link, which mbot never writes; remove it or choose an empty or new --out directory", dir, e.Name())
		case !e.Type().IsRegular():
			return fmt.Errorf("%s holds %s, which is not a regular file and so not one mbot wrote; choose an empty or new --out directory", dir, e.Name())
		}
	}
	return nil
}

// linkError explains why the symbolic link dir is refused and what to do.
func linkError(dir string) error {
	target, _ := os.Readlink(dir)
	resolved, err := filepath.EvalSymlinks(dir)
	what := "remove the link or choose another --out"
	if err != nil {
		what = "the link points nowhere; remove it or choose another --out"
	} else if st, err := os.Stat(resolved); err == nil && st.IsDir() {
		what = fmt.Sprintf("set --out (or destination:) to the directory itself, %s, or remove the link", Quote(resolved))
	}
	return fmt.Errorf("%s is a symbolic link to %s; mbot does not write credentials through a link, since whoever can change it decides where they land: %s",
		dir, Quote(target), what)
}

// checkAncestor checks that the nearest existing ancestor of a missing dir
// is a directory, so that WriteDir can create the rest.
func checkAncestor(dir string) error {
	missing := missingParents(dir)
	existing := filepath.Dir(dir)
	if len(missing) > 0 {
		existing = filepath.Dir(missing[0])
	}
	st, err := os.Stat(existing) // links above dir are fine
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("cannot write %s: %s is not a directory; choose another --out", dir, existing)
	}
	return nil
}

// missingParents returns the ancestors of dir that do not exist, outermost first.
func missingParents(dir string) []string {
	var missing []string
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); !isMissing(err) {
			break
		}
		missing = append(missing, p)
		if filepath.Dir(p) == p {
			break
		}
	}
	slices.Reverse(missing)
	return missing
}

// checkPathChars refuses paths that ssh_config cannot hold as written:
// control characters would start a new line (and so a new option), a '"'
// would end the quoted value, and OpenSSH expands '%' tokens in file paths.
func checkPathChars(dir string) error {
	bad := func(r rune) bool { return unicode.IsControl(r) || r == '"' || r == '%' || r == utf8.RuneError }
	if i := strings.IndexFunc(dir, bad); i >= 0 {
		r, _ := utf8.DecodeRuneInString(dir[i:])
		return fmt.Errorf("--out %s contains %s, which ssh_config cannot hold as written (a control character would start a new option); choose a path without control characters, '\"' or '%%'",
			Quote(dir), Quote(string(r)))
	}
	return nil
}

// isMissing reports whether err says a path does not exist, also because
// a file stands where a directory of its path should be.
func isMissing(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// ownedBy reports whether st belongs to the user mbot runs as or to owner.
func ownedBy(st fs.FileInfo, owner *Owner) bool {
	uid, ok := ownerUID(st)
	return !ok || uid == os.Geteuid() || owner != nil && uid == owner.UID
}

// writeNew creates name in root; O_EXCL refuses anything already there,
// a symbolic link included, and the root keeps it inside the directory.
func writeNew(root *os.Root, name string, data []byte, mode fs.FileMode) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	_ = d.Sync() // not every filesystem supports syncing a directory
	return nil
}

// ChownDir gives a directory WriteDir wrote, and the files in it, to
// uid:gid, for a server that reads its credentials as its own user
// (mbot sign --owner postgres). Modes are kept: the key stays 0600, now
// readable by that user only.
func ChownDir(dir string, uid, gid int) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Lchown(filepath.Join(dir, e.Name()), uid, gid); err != nil {
			return fmt.Errorf("giving %s to %d:%d: %w", filepath.Join(dir, e.Name()), uid, gid, err)
		}
	}
	if err := os.Lchown(dir, uid, gid); err != nil {
		return fmt.Errorf("giving %s to %d:%d: %w", dir, uid, gid, err)
	}
	return nil
}
