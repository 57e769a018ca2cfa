// Loaded before netron's own scripts on /netron/: netron downloads the artifact with
// XMLHttpRequest, which cannot know the page's API key; this adds it to requests for this
// origin's /v1/ routes, and to nothing else. The key is in this tab's sessionStorage (a
// tab opened by the page gets a copy) or in the opener's.
(function () {
  'use strict';
  function key() {
    try {
      const own = window.sessionStorage.getItem('modelport.key');
      if (own) return own;
      return window.opener ? window.opener.sessionStorage.getItem('modelport.key') : null;
    } catch (e) {
      return null;
    }
  }
  const open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function (method, url) {
    open.apply(this, arguments);
    const target = new URL(url, window.location.href);
    const secret = key();
    if (secret && target.origin === window.location.origin && target.pathname.startsWith('/v1/')) {
      this.setRequestHeader('Authorization', 'Bearer ' + secret);
    }
  };
})();
