package status

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
)

// static holds the page's CSS and JavaScript. Nothing else is ever served
// from /assets/.
//
//go:embed assets/static
var static embed.FS

// asset is one embedded file, served under a name carrying its content's
// hash, so it can be cached for a year and a new build is fetched at once.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// assets maps the served names (page.1a2b3c4d5e.css) to their files;
// assetNames maps the plain names the templates use to the served ones.
var assets, assetNames = loadAssets()

func loadAssets() (map[string]asset, map[string]string) {
	byServed, byPlain := map[string]asset{}, map[string]string{}
	err := fs.WalkDir(static, "assets/static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		hash := hex.EncodeToString(sum[:5])
		name := path.Base(p)
		ext := path.Ext(name)
		served := strings.TrimSuffix(name, ext) + "." + hash + ext
		ctype := mime.TypeByExtension(ext)
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		byServed[served] = asset{body: body, ctype: ctype, etag: `"` + hash + `"`}
		byPlain[name] = "/assets/" + served
		return nil
	})
	if err != nil {
		panic("status: reading the embedded assets: " + err.Error()) // the build embedded them
	}
	return byServed, byPlain
}

// assetURL is the URL of an embedded file by its plain name; templates
// call it, and a name that does not exist fails the template at its first
// rendering (a test renders every page).
func assetURL(name string) (string, error) {
	u, ok := assetNames[name]
	if !ok {
		return "", fs.ErrNotExist
	}
	return u, nil
}

// serveAsset answers /assets/NAME from the embedded set alone: the name is
// a key looked up in a map, never a path opened on a file system, so no
// spelling of a path (dot segments, encoded slashes, absolute paths)
// reaches anything else.
func serveAsset(w http.ResponseWriter, r *http.Request) {
	if !getOnly(w, r) {
		return
	}
	a, ok := assets[strings.TrimPrefix(r.URL.Path, "/assets/")]
	if !ok {
		writeError(w, http.StatusNotFound, "no such asset: "+r.URL.Path+" (the page links the current ones; reload it)")
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	h.Set("Cache-Control", "public, max-age=31536000, immutable")
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if match := r.Header.Get("If-None-Match"); match == a.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(a.body)
	}
}
