// Analytics Desk extension, served by GET /script.file-downloads.js: file downloads.
// Include it after /script.js (it sends through window.analytics):
//   <script defer src="http://localhost:1000/script.file-downloads.js"></script>
// A click (left, or middle) on a link to a file of a common type (Plausible's
// list, by the extension of the link's path) sends "File Download" with props {url}.
(function(d,w){
var x=/\.(pdf|xlsx?|docx?|txt|rtf|csv|exe|key|pp[st]x?|7z|pkg|rar|gz|zip|avi|mov|mp4|mpe?g|wmv|midi?|mp3|wav|wma|dmg|iso|msi|apk|epub|od[tsp])$/i;
function click(e){
  if(e.type=='auxclick'&&e.button!=1)return;
  var a=e.target.closest&&e.target.closest('a[href]');
  if(a&&/^https?:$/.test(a.protocol)&&x.test(a.pathname)&&w.analytics)w.analytics.track('File Download',{props:{url:a.href}});
}
d.addEventListener('click',click);
d.addEventListener('auxclick',click);
})(document,window);
