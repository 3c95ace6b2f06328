// Analytics Desk extension, served by GET /script.outbound.js: outbound link clicks.
// Include it after /script.js (it sends through window.analytics):
//   <script defer src="http://localhost:1000/script.outbound.js"></script>
// A click (left, or middle: a new tab) on a link to another host sends the event
// "Outbound Link: Click" with props {url}. The base script sends it as a beacon,
// which outlives the page the link leaves.
(function(d,w,l){
function click(e){
  if(e.type=='auxclick'&&e.button!=1)return;
  var a=e.target.closest&&e.target.closest('a[href]');
  if(a&&/^https?:$/.test(a.protocol)&&a.host!=l.host&&w.analytics)w.analytics.track('Outbound Link: Click',{props:{url:a.href}});
}
d.addEventListener('click',click);
d.addEventListener('auxclick',click);
})(document,window,location);
