// Loaded before uPlot, as a classic script. Under LANG=C (common on servers and
// in minimal desktop sessions) WebKitGTK reports navigator.language as "C", which
// is no BCP 47 tag: uPlot's `new Intl.NumberFormat(navigator.language)` would throw
// and the charts would never load. Report the runtime's own default locale instead.
(function () {
  try {
    new Intl.NumberFormat(navigator.language);
  } catch (_) {
    const fallback = new Intl.NumberFormat().resolvedOptions().locale || 'en-US';
    Object.defineProperty(navigator, 'language', { get: () => fallback, configurable: true });
    Object.defineProperty(navigator, 'languages', { get: () => [fallback], configurable: true });
  }
})();
