// MathJax 3 settings for the docs site (loaded before assets/mathjax/tex-svg.js, which the build copies from
// the npm package `mathjax`). pymdownx.arithmatex wraps every formula in .arithmatex as \(...\) or \[...\];
// MathJax typesets only those, so dollar signs in code and outputs are left alone.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
  svg: { fontCache: "global" },  // SVG output needs no web fonts: the site works offline, even from file://
};
