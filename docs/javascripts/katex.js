// Render the $...$ / $$...$$ maths that pymdownx.arithmatex (generic mode) leaves in the page,
// on every page load and after each instant navigation (mkdocs-material's document$).
function renderMaths(root) {
  renderMathInElement(root, {
    delimiters: [
      { left: "$$", right: "$$", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,
  });
}

if (typeof document$ !== "undefined") {
  document$.subscribe(({ body }) => renderMaths(body));
} else {
  document.addEventListener("DOMContentLoaded", () => renderMaths(document.body));
}
