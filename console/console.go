// Package console is mbot console: a web console for operators on the
// admin's own machine, reading the authority through an admin.Client (the
// admin API with an admin identity, or the store on the authority host).
// It adds no listener or login to the authority.
//
// Security: the console prints one URL with a one-time token; the token is
// exchanged for an HttpOnly, SameSite=Strict session cookie and the
// browser is redirected to drop it from the address bar. Every request
// needs the cookie; every action is a POST with the session's CSRF token,
// from the console's own origin, and takes a confirmation step. Pages are
// html/template (claims and names are attacker-influenced) under a
// Content-Security-Policy with no inline script or style; the assets are
// embedded. Charts are SVG rendered on the server: the console runs no
// script at all.
package console

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mbot-dev/mbot/admin"
	"github.com/mbot-dev/mbot/identity"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// CookieName is the session cookie.
const CookieName = "mbot_console"

// SecurityHeaders are set on every answer.
var SecurityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; " +
		"frame-ancestors 'none'; base-uri 'none'",
	"X-Frame-Options":              "DENY",
	"X-Content-Type-Options":       "nosniff",
	"Referrer-Policy":              "same-origin",
	"Cache-Control":                "no-store",
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
}

// Options configure a console.
type Options struct {
	Client admin.Client
	// ReadOnly hides the actions and refuses them. A client whose
	// ReadOnly() says so (a read-only admin identity) makes it read-only too.
	ReadOnly bool
	// Addr is the address the console listens on (host:port), which the
	// printed URL names.
	Addr string
	// Source says what the console reads ("admin API at https://...",
	// "store of /etc/mbot/authority.yaml"), for the page header.
	Source string
	Log    *slog.Logger
	// Now is the clock (tests); nil for time.Now.
	Now func() time.Time
}

// Server is a console.
type Server struct {
	opts  Options
	pages map[string]*template.Template

	mu        sync.Mutex
	token     string // the one-time token, "" once used
	sessions  map[string]string
	tokenSeen bool
}

// New makes a console with a fresh one-time token.
func New(opts Options) (*Server, error) {
	if opts.Client == nil {
		return nil, errors.New("console: no admin client")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if ro, ok := opts.Client.(interface{ ReadOnly() bool }); ok && ro.ReadOnly() {
		opts.ReadOnly = true
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	pages, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	return &Server{opts: opts, pages: pages, token: randomToken(), sessions: map[string]string{}}, nil
}

// URL is the address to open once: it carries the one-time token.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.opts.Addr + "/?" + url.Values{"token": {s.token}}.Encode()
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Handler serves the console.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.page("overview", s.overview))
	mux.HandleFunc("GET /bots", s.page("bots", s.bots))
	mux.HandleFunc("GET /audit", s.page("audit", s.audit))
	mux.HandleFunc("GET /audit/{id}", s.page("record", s.record))
	mux.HandleFunc("GET /clusters", s.page("clusters", s.clusters))
	mux.HandleFunc("GET /actions", s.page("actions", s.actions))
	mux.HandleFunc("POST /actions", s.page("actions", s.act))
	return s.guard(mux)
}

// guard sets the security headers and lets through only requests with the
// session cookie (or the one-time token, exchanged for it), and POSTs
// only with the session's CSRF token from this origin.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range SecurityHeaders {
			w.Header().Set(k, v)
		}
		if !s.hostAllowed(r.Host) {
			s.refuse(w, r, http.StatusMisdirectedRequest, "This console answers only at the address it printed ("+s.opts.Addr+").")
			return
		}
		if strings.HasPrefix(r.URL.Path, "/static/") && r.Method == http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
			s.refuse(w, r, http.StatusMethodNotAllowed, "Only GET and POST are answered.")
			return
		}
		if tok := r.URL.Query().Get("token"); tok != "" && r.Method == http.MethodGet {
			s.exchangeToken(w, r, tok)
			return
		}
		csrf, ok := s.session(r)
		if !ok {
			s.refuse(w, r, http.StatusUnauthorized, "No console session: open the URL that mbot console printed. Its token works once; run mbot console again for a new one.")
			return
		}
		if r.Method == http.MethodPost {
			if s.opts.ReadOnly {
				s.refuse(w, r, http.StatusForbidden, "This console is read-only (mbot console --read-only, or a read-only admin identity): it takes no action.")
				return
			}
			if err := checkPost(r, csrf); err != nil {
				s.refuse(w, r, http.StatusForbidden, "Action refused: "+err.Error())
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(withCSRF(r.Context(), csrf)))
	})
}

// hostAllowed refuses requests whose Host is not the console's (DNS
// rebinding): on a loopback address, any loopback name with its port.
func (s *Server) hostAllowed(host string) bool {
	if host == s.opts.Addr {
		return true
	}
	lh, lport, err := net.SplitHostPort(s.opts.Addr)
	if err != nil {
		return false
	}
	h, port, err := net.SplitHostPort(host)
	if err != nil || port != lport {
		return false
	}
	if ip := net.ParseIP(lh); ip != nil && ip.IsLoopback() {
		ip := net.ParseIP(h)
		return h == "localhost" || (ip != nil && ip.IsLoopback())
	}
	if ip := net.ParseIP(lh); ip != nil && ip.IsUnspecified() {
		return true
	}
	return false
}

func (s *Server) exchangeToken(w http.ResponseWriter, r *http.Request, tok string) {
	s.mu.Lock()
	valid := s.token != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) == 1
	var id, csrf string
	if valid {
		s.token = ""
		id, csrf = randomToken(), randomToken()
		s.sessions[id] = csrf
	}
	s.mu.Unlock()
	if !valid {
		s.opts.Log.Warn("console: a request with a wrong or used token was refused", "remote", r.RemoteAddr)
		s.refuse(w, r, http.StatusUnauthorized, "This URL's token is wrong or was already used: a token works once. Run mbot console again for a new URL.")
		return
	}
	s.opts.Log.Info("console: the one-time token was exchanged for a session", "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	q := r.URL.Query()
	q.Del("token")
	to := r.URL.Path
	if len(q) > 0 {
		to += "?" + q.Encode()
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// session returns the CSRF token of the request's session.
func (s *Server) session(r *http.Request) (string, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil || c.Value == "" {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	csrf, ok := s.sessions[c.Value]
	return csrf, ok
}

// checkPost refuses a POST without the session's CSRF token or from
// another site.
func checkPost(r *http.Request, csrf string) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return fmt.Errorf("it came from another site (%s)", site)
	}
	if origin := r.Header.Get("Origin"); origin != "" && origin != "http://"+r.Host {
		return fmt.Errorf("it came from origin %s, not http://%s", identity.Printable(origin), identity.Printable(r.Host))
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return errors.New("the form could not be read")
	}
	got := r.PostForm.Get("csrf")
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(csrf)) != 1 {
		return errors.New("the form has no valid CSRF token; reload the page and try again")
	}
	return nil
}

// refuse answers status with a page that says why.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = s.pages["refused"].ExecuteTemplate(w, "layout", &view{Title: http.StatusText(status), Message: msg, Bare: true})
}
