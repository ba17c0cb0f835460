// The creps-serve viewer: an OpenSeadragon view of /seed/{seed}.dzi?psi=..., seed and psi controls, and the view in
// the page's query string (?seed=&psi=&x=&y=&zoom=) so that a copied URL opens the same view.
//   x, y  the centre of the view in the model's plane (the trained view is [0, 1] on both axes);
//   zoom  OpenSeadragon's zoom: viewer widths per canvas width (1 shows the whole canvas across the viewer,
//         canvas.views shows one trained view across).
// window.creps (the viewer and the view) is there for the browser test and the console.
"use strict";

const SEED_MAX = 2 ** 32 - 1; // the server's range for seed and psi (it answers 400 outside them)
const PSI_LIMIT = 2;
const URL_DELAY_MS = 200; // the URL follows the view once it rests this long (browsers throttle replaceState)

// /info's canvas: deepest-level pixel i has its centre at x0 + step * i (y alike). OpenSeadragon's viewport puts the
// image's left edge at 0 and its right edge at 1, y in the same unit.
function planeToViewport(canvas, x, y) {
  const toViewport = (value, origin) => ((value - origin) / canvas.step + 0.5) / canvas.width;
  return new OpenSeadragon.Point(toViewport(x, canvas.x0), toViewport(y, canvas.y0));
}

function viewportToPlane(canvas, point) {
  const toPlane = (value, origin) => origin + canvas.step * (value * canvas.width - 0.5);
  return { x: toPlane(point.x, canvas.x0), y: toPlane(point.y, canvas.y0) };
}

function validSeed(value) {
  return Number.isInteger(value) && value >= 0 && value <= SEED_MAX;
}

function validPsi(value) {
  return Number.isFinite(value) && Math.abs(value) <= PSI_LIMIT;
}

// The view a URL names; a missing or malformed value falls back to its default (seed 0, psi 1, the trained view).
function readUrl(search) {
  const params = new URLSearchParams(search);
  const number = (name) => {
    const text = params.get(name);
    return text === null || text.trim() === "" ? NaN : Number(text);
  };
  const [seed, psi, x, y, zoom] = ["seed", "psi", "x", "y", "zoom"].map(number);
  const view = Number.isFinite(x) && Number.isFinite(y) && Number.isFinite(zoom) && zoom > 0 ? { x, y, zoom } : null;
  return { seed: validSeed(seed) ? seed : 0, psi: validPsi(psi) ? psi : 1, view };
}

// Enough digits for a pixel of the deepest level at any zoom, few enough to read.
function short(value) {
  return String(Number(value.toPrecision(9)));
}

function describe(info) {
  const model = info.model;
  return `${model.img_resolution}-pixel model (${model.z_dim}-d latents) · ${info.precision} on ${info.backend}`;
}

async function main() {
  const about = document.getElementById("about");
  const fail = (message) => {
    about.textContent = message;
    about.classList.add("error");
  };
  let info;
  try {
    const response = await fetch("/info");
    if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
    info = await response.json();
  } catch (error) {
    fail(`cannot read /info: ${error.message}`);
    return;
  }
  const canvas = info.canvas;
  about.textContent = describe(info);

  const state = readUrl(window.location.search);
  const seedInput = document.getElementById("seed");
  const psiInput = document.getElementById("psi");
  const psiRange = document.getElementById("psi-range");
  seedInput.value = state.seed;
  psiInput.value = psiRange.value = state.psi;

  const viewer = OpenSeadragon({
    element: document.getElementById("viewer"),
    prefixUrl: "/static/vendor/openseadragon/images/",
    // The 2D canvas draws tiles pixel for pixel; WebGL adds nothing for one image (and is emulated without a GPU).
    drawer: "canvas",
    showNavigator: true,
    navigatorPosition: "BOTTOM_RIGHT",
    // Past the deepest level the pixels are magnified, not rendered: allow a little of that, not more.
    maxZoomPixelRatio: 2,
  });

  const trainedView = () => {
    const corner = planeToViewport(canvas, 0, 0);
    const far = planeToViewport(canvas, 1, 1);
    viewer.viewport.fitBounds(new OpenSeadragon.Rect(corner.x, corner.y, far.x - corner.x, far.y - corner.y), true);
    viewer.viewport.applyConstraints(true);
  };
  const currentView = () => {
    const centre = viewportToPlane(canvas, viewer.viewport.getCenter());
    return { x: centre.x, y: centre.y, zoom: viewer.viewport.getZoom() };
  };
  const restore = (view) => {
    if (view === null) {
      trainedView();
      return;
    }
    viewer.viewport.zoomTo(view.zoom, null, true);
    viewer.viewport.panTo(planeToViewport(canvas, view.x, view.y), true);
    viewer.viewport.applyConstraints(true);
  };
  const writeUrl = () => {
    const view = currentView();
    const params = new URLSearchParams({
      seed: state.seed, psi: state.psi, x: short(view.x), y: short(view.y), zoom: short(view.zoom),
    });
    window.history.replaceState(null, "", `?${params}`);
  };
  let urlTimer = null;
  viewer.addHandler("viewport-change", () => {
    window.clearTimeout(urlTimer);
    urlTimer = window.setTimeout(writeUrl, URL_DELAY_MS);
  });
  viewer.addHandler("open-failed", (event) => fail(`cannot open seed ${state.seed} psi ${state.psi}: ${event.message}`));

  // A new seed or psi keeps the view where it is. OpenSeadragon resets the view on open; the view to restore is
  // the latest one asked for, so that opens overtaking each other all land there.
  let opening = null;
  viewer.addHandler("open", () => {
    about.textContent = describe(info);
    about.classList.remove("error");
    restore(opening);
    writeUrl();
  });
  const open = (view) => {
    opening = view;
    viewer.open(`/seed/${state.seed}.dzi?psi=${state.psi}`);
  };
  const apply = () => {
    if (!seedInput.checkValidity() || !psiInput.checkValidity()) return; // the inputs show :invalid
    const seed = Number(seedInput.value);
    const psi = Number(psiInput.value);
    if (!validSeed(seed) || !validPsi(psi) || (seed === state.seed && psi === state.psi)) return;
    state.seed = seed;
    state.psi = psi;
    open(currentView());
  };
  document.getElementById("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    apply();
  });
  seedInput.addEventListener("change", apply);
  psiInput.addEventListener("change", () => {
    psiRange.value = psiInput.value;
    apply();
  });
  psiRange.addEventListener("input", () => {
    psiInput.value = psiRange.value;
  });
  psiRange.addEventListener("change", apply);
  document.getElementById("home").addEventListener("click", trainedView);

  window.creps = { viewer, canvas, state, currentView, planeToViewport: (x, y) => planeToViewport(canvas, x, y) };
  open(state.view);
}

main();
