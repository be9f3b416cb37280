// matplotlib's viridis (Smith & van der Walt, CC0) and cividis (Nuñez, Anderton & Renslow 2018,
// made for readers with colour-vision deficiencies), 64 stops each: both are perceptually uniform
// and read the same in grey. Generated with
//   python -c "import json, matplotlib; from matplotlib.colors import to_hex; print(json.dumps(
//     {n: [to_hex(matplotlib.colormaps[n].resampled(64)(i)) for i in range(64)]
//      for n in ('viridis', 'cividis')}))"
export const COLORMAPS = {
  viridis: ['#440154','#46075a','#470d60','#471365','#48186a','#481d6f','#482374','#482878','#472d7b','#46327e','#453781','#443b84','#424086','#404588','#3e4989','#3d4e8a','#3a538b','#38588c','#365c8d','#34608d','#32648e','#31688e','#2f6c8e','#2d708e','#2c738e','#2a778e','#297b8e','#277f8e','#26828e','#24868e','#238a8d','#218e8d','#20928c','#1f968b','#1f9a8a','#1f9e89','#1fa187','#21a585','#23a983','#26ad81','#2ab07f','#2fb47c','#35b779','#3bbb75','#42be71','#4ac16d','#52c569','#5ac864','#65cb5e','#6ece58','#77d153','#81d34d','#8bd646','#95d840','#a0da39','#aadc32','#b5de2b','#c0df25','#cae11f','#d5e21a','#dfe318','#eae51a','#f4e61e','#fde725'],
  cividis: ['#00224e','#002554','#00285b','#002b62','#002e6a','#003070','#053371','#123570','#1a386f','#213b6e','#273e6e','#2d416d','#32436d','#36466c','#3b496c','#3f4c6c','#444f6c','#48526c','#4c556c','#50576c','#545a6d','#575d6d','#5b606e','#5e636f','#62656f','#656870','#696b71','#6c6e72','#707173','#737475','#777776','#7a7a78','#7e7d78','#828079','#868379','#8a8678','#8e8978','#928c78','#958f77','#999277','#9d9576','#a19975','#a59c74','#a99f73','#ada272','#b1a570','#b6a96f','#baac6d','#bfb06b','#c3b369','#c7b767','#ccba64','#d0be62','#d4c15f','#d9c55c','#ddc858','#e1cc55','#e6d051','#ead34c','#efd748','#f3db42','#f8df3c','#fde334','#fee838'],
};
