// Pictures of what arrived: each image's thumbnail (OMERO's, through the portal) and each spectrum's
// plot, small, in a job's row on the upload page, in History and in the staff view. A picture OMERO
// cannot give (e.g. the owner's session ended) is left out, never shown broken.
const MAX_SHOWN = 4;

export function pictures(job) {
  const box = document.createElement("div");
  box.className = "thumbs";
  const items = [
    ...(job.images || []).map((image) => [`/api/jobs/${job.id}/images/${image.id}/thumbnail`, image.name]),
    ...(job.plots || []).map((plot) => [`/api/jobs/${job.id}/plots/${plot.file_id}`, `${plot.title} (plot)`]),
  ];
  for (const [src, name] of items.slice(0, MAX_SHOWN)) {
    const img = document.createElement("img");
    Object.assign(img, { src, alt: `Picture of ${name}`, title: name, loading: "lazy", width: 64, height: 64 });
    img.addEventListener("error", () => img.remove());
    box.append(img);
  }
  if (items.length > MAX_SHOWN) box.append(`+${items.length - MAX_SHOWN} more`);
  return items.length ? box : null;
}
