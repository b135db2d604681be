/**
 * The benchmark report's chart: a self-contained SVG of each target's ops/s ratio against direct
 * memcached, one group of bars per workload, with a dashed line at 1.00 (memcached itself).
 *
 * Invariants: a pure function of the summary; a cell with no ratio draws no bar (never a zero);
 * every text taken from the run is escaped for XML.
 */

import { parseWorkload, type WorkloadId } from './loadgen.ts';
import type { CellSummary } from './report-types.ts';
import { targetLabel, TARGET_NAMES, type TargetName } from './targets.ts';

const COLORS: Record<TargetName, string> = {
  memcached: '#7f7f7f',
  twemproxy: '#bcbd22',
  'node-pipe': '#17becf',
  'ordered-pipe': '#8c564b',
  etcd: '#ff7f0e',
  linearizability: '#d62728',
  sequential: '#1f77b4',
  causal: '#9467bd',
  eventual: '#2ca02c',
};

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (character) => `&#${character.charCodeAt(0)};`);
}

interface ChartLayout {
  left: number;
  top: number;
  plotWidth: number;
  plotHeight: number;
  ratioMax: number;
}

function axisSvg(layout: ChartLayout): string[] {
  const parts: string[] = [];
  const steps = Math.ceil(layout.ratioMax / 0.25);
  for (let step = 0; step <= steps; step += 1) {
    const ratio = step * 0.25;
    const y = layout.top + layout.plotHeight - (ratio / layout.ratioMax) * layout.plotHeight;
    const isOne = Math.abs(ratio - 1) < 1e-9;
    parts.push(
      `<line x1="${layout.left}" x2="${layout.left + layout.plotWidth}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="${isOne ? '#333' : '#ddd'}"${isOne ? ' stroke-dasharray="6 4"' : ''}/>`,
      `<text x="${layout.left - 8}" y="${(y + 4).toFixed(1)}" text-anchor="end" font-size="12">${ratio.toFixed(2)}</text>`,
    );
  }
  return parts;
}

function barsSvg(summary: CellSummary[], workloads: WorkloadId[], targets: TargetName[], layout: ChartLayout): string[] {
  const parts: string[] = [];
  const groupWidth = layout.plotWidth / workloads.length;
  const barWidth = (groupWidth * 0.8) / targets.length;
  workloads.forEach((workload, group) => {
    const groupLeft = layout.left + group * groupWidth + groupWidth * 0.1;
    targets.forEach((target, index) => {
      const ratio = summary.find((cell) => cell.target === target && cell.workload === workload)?.ratio ?? null;
      if (ratio === null) return;
      const height = (Math.min(ratio, layout.ratioMax) / layout.ratioMax) * layout.plotHeight;
      const x = groupLeft + index * barWidth;
      const y = layout.top + layout.plotHeight - height;
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(barWidth - 2).toFixed(1)}" height="${height.toFixed(1)}" fill="${COLORS[target]}"><title>${escapeXml(`${targetLabel(target)}, ${workload}: ${ratio.toFixed(2)}× direct`)}</title></rect>`,
        `<text x="${(x + barWidth / 2 - 1).toFixed(1)}" y="${(y - 4).toFixed(1)}" text-anchor="middle" font-size="10">${ratio.toFixed(2)}</text>`,
      );
    });
    const label = parseWorkload(workload)?.label ?? workload;
    parts.push(`<text x="${(layout.left + (group + 0.5) * groupWidth).toFixed(1)}" y="${layout.top + layout.plotHeight + 18}" text-anchor="middle" font-size="12">${escapeXml(label)}</text>`);
  });
  return parts;
}

const LEGEND_ITEM_WIDTH = 170;

function legendSvg(targets: TargetName[], layout: ChartLayout, y: number): string[] {
  const perRow = Math.max(1, Math.floor(layout.plotWidth / LEGEND_ITEM_WIDTH));
  return targets.flatMap((target, index) => {
    const x = layout.left + (index % perRow) * LEGEND_ITEM_WIDTH;
    const rowY = y + Math.floor(index / perRow) * 20;
    return [
      `<rect x="${x}" y="${rowY}" width="12" height="12" fill="${COLORS[target]}"/>`,
      `<text x="${x + 18}" y="${rowY + 11}" font-size="12">${escapeXml(targetLabel(target))}</text>`,
    ];
  });
}

/** A self-contained SVG bar chart: ops/s ratio against direct memcached per target per workload. */
export function renderChartSvg(summary: CellSummary[], notes: string[]): string {
  const workloads = [...new Set(summary.map((cell) => cell.workload))];
  const targets = TARGET_NAMES.filter((target) => summary.some((cell) => cell.target === target));
  const ratios = summary.map((cell) => cell.ratio ?? 0);
  const layout: ChartLayout = {
    left: 60,
    top: 40 + 14 * notes.length,
    plotWidth: Math.max(720, workloads.length * 220),
    plotHeight: 320,
    ratioMax: Math.max(1.25, Math.ceil(Math.max(...ratios, 0) / 0.25) * 0.25),
  };
  const width = layout.left + layout.plotWidth + 20;
  const legendRows = Math.ceil(targets.length / Math.max(1, Math.floor(layout.plotWidth / LEGEND_ITEM_WIDTH)));
  const height = layout.top + layout.plotHeight + 50 + 20 * legendRows;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${layout.left}" y="22" font-size="16" font-weight="bold">mckv: ops/s relative to direct memcached</text>`,
    ...notes.map((note, index) => `<text x="${layout.left}" y="${40 + 14 * index}" font-size="11" fill="#555">${escapeXml(note)}</text>`),
    ...axisSvg(layout),
    ...barsSvg(summary, workloads, targets, layout),
    ...legendSvg(targets, layout, layout.top + layout.plotHeight + 36),
    '</svg>',
    '',
  ].join('\n');
}
