// Analytics Desk extension, served by GET /script.404.js: "page not found" views.
// Include it on the site's 404 page only, after /script.js:
//   <script defer src="http://localhost:1000/script.404.js"></script>
// Sends the event "404" with props {path} (the page view is sent as on any page).
// Deferred scripts all run before DOMContentLoaded: wait for it if the base
// script has not run yet.
(function(w,d,l){
function send(){w.analytics&&w.analytics.track('404',{props:{path:l.pathname}})}
w.analytics?send():d.addEventListener('DOMContentLoaded',send);
})(window,document,location);
