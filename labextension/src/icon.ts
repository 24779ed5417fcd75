import { LabIcon } from '@jupyterlab/ui-components';

/** Three stacked nodes: a cluster. Colours follow the theme (jp-icon3). */
const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M4.2 3.5 12 0.8l7.8 2.7v2.6L12 8.8 4.2 6.1z"/>
    <path d="M4.2 9.8 12 12.5l7.8-2.7v2.6L12 15.1l-7.8-2.7z" opacity=".8"/>
    <path d="M4.2 16.1 12 18.8l7.8-2.7v2.6L12 21.4l-7.8-2.7z" opacity=".6"/>
  </g>
</svg>`;

export const daskKubeIcon = new LabIcon({
  name: 'jupyter-dask-kube:clusters',
  svgstr
});
